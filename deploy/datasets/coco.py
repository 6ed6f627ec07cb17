"""COCO-format test data: image list from the annotation file, loaded through the test pipeline."""

import contextlib
import functools
import io
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from .pipeline import TestPipeline, collate


def load_coco(ann_file: str | Path, config_key: str = 'data.test.ann_file'):
    """A quiet ``pycocotools.coco.COCO``; a missing or malformed file is one ConfigError
    naming it (``config_key``: where the config sets it, for the hint)."""
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise ConfigError(
            f'annotation file not found: {ann_file} (generate the data set with '
            f'python tools/dataset/generate_synthetic_coco.py, or set {config_key})'
        )
    try:
        data = json.loads(ann_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f'annotation file {ann_file} is not valid JSON: {err}') from None
    if not isinstance(data, dict):
        raise ConfigError(f'annotation file {ann_file} is not a COCO object (a JSON dict)')
    for key in ('images', 'categories'):
        if not isinstance(data.get(key), list):
            raise ConfigError(f'annotation file {ann_file} has no `{key}` list: not COCO format')
    if not data['categories']:
        raise ConfigError(f'annotation file {ann_file} lists no categories')
    for where, items in (('images', data['images']), ('categories', data['categories'])):
        if not all(isinstance(item, dict) and 'id' in item for item in items):
            raise ConfigError(f'annotation file {ann_file}: every entry of `{where}` needs an id')
    if not all('name' in c for c in data['categories']):
        raise ConfigError(f'annotation file {ann_file}: every category needs a name')
    data.setdefault('annotations', [])
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(
            f'annotation file {ann_file} is malformed: {type(err).__name__} {err}'
        ) from None
    return coco


class CocoDetectionDataset(Dataset):
    """The images of a COCO annotation file, in image-id order, through ``pipeline``.

    Attributes:
        cat_ids: sorted category ids; model label ``i`` is ``cat_ids[i]``.
        class_names: category names in the same order.
    """

    def __init__(
        self,
        ann_file: str | Path,
        img_prefix: str | Path,
        pipeline: TestPipeline,
        config_key: str = 'data.test.ann_file',
    ):
        self.coco = load_coco(ann_file, config_key)
        self.ann_file = str(ann_file)
        self.img_prefix = Path(img_prefix)
        self.pipeline = pipeline
        self.img_ids = sorted(self.coco.getImgIds())
        self.cat_ids = sorted(self.coco.getCatIds())
        self.class_names = tuple(self.coco.cats[c]['name'] for c in self.cat_ids)

    def __len__(self) -> int:
        return len(self.img_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        """``(tensor [3, H, W] float32, meta)`` of the ``index``-th image in image-id order."""
        img_id = self.img_ids[index]
        info = self.coco.imgs[img_id]
        return self.pipeline(self.img_prefix / info['file_name'], img_id=img_id)


def build_dataloader(dataset: Dataset, batch_size: int = 1, num_workers: int = 2) -> DataLoader:
    """Batches in data set order, as ``(tensor [B, 3, H, W], metas)`` from :func:`collate`.

    With ``num_workers > 0``, persistent worker processes decode and pre-process the next
    batches (``prefetch_factor`` ahead) while the backend runs the current one.
    """
    pipeline = getattr(dataset, 'pipeline', None)
    pad_value = pipeline.cfg.pad_value if isinstance(pipeline, TestPipeline) else 0.0
    workers = num_workers > 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, pad_value=pad_value),
        persistent_workers=workers,
        prefetch_factor=4 if workers else None,
        pin_memory=torch.cuda.is_available(),
    )
