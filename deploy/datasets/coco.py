"""COCO-format test data: image list from the annotation file, loaded through the test pipeline."""
import contextlib
import io
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from .pipeline import TestPipeline, collate


def load_coco(ann_file: str | Path):
    """A quiet ``pycocotools.coco.COCO``; a missing file is a ConfigError naming it."""
    from pycocotools.coco import COCO
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise ConfigError(f'annotation file not found: {ann_file} (generate the data set with '
                          'python tools/dataset/generate_synthetic_coco.py, or fix data.test)')
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file))


class CocoDetectionDataset(Dataset):
    """The images of a COCO annotation file, in image-id order, through ``pipeline``.

    Attributes:
        cat_ids: sorted category ids; model label ``i`` is ``cat_ids[i]``.
        class_names: category names in the same order.
    """

    def __init__(self, ann_file: str | Path, img_prefix: str | Path, pipeline: TestPipeline):
        self.coco = load_coco(ann_file)
        self.ann_file = str(ann_file)
        self.img_prefix = Path(img_prefix)
        self.pipeline = pipeline
        self.img_ids = sorted(self.coco.getImgIds())
        self.cat_ids = sorted(self.coco.getCatIds())
        self.class_names = tuple(self.coco.cats[c]['name'] for c in self.cat_ids)

    def __len__(self) -> int:
        return len(self.img_ids)

    def __getitem__(self, index: int):
        img_id = self.img_ids[index]
        info = self.coco.imgs[img_id]
        return self.pipeline(self.img_prefix / info['file_name'], img_id=img_id)


def build_dataloader(dataset: Dataset, batch_size: int = 1, num_workers: int = 2) -> DataLoader:
    """Ordered batches; worker processes decode and pre-process while the backend runs."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate, persistent_workers=num_workers > 0,
                      prefetch_factor=4 if num_workers > 0 else None,
                      pin_memory=torch.cuda.is_available())
