"""Training-time data: a COCO-format set through load -> keep-ratio resize -> random horizontal
flip -> normalise -> pad, with boxes (and masks) transformed alongside (MMDetection's
``LoadAnnotations``, ``Resize``, ``RandomFlip``, ``Normalize``, ``Pad``).

Normalisation and padding are read from the test pipeline (:func:`get_preprocess_cfg`), so the
network sees the same kind of input in training and at test time; only the resize scale and the
flip probability come from the config's train pipeline.

A batch is a dict::

    img        [B, 3, H, W] float32, padded bottom/right to the largest image
    img_metas  per image: img_shape, pad_shape, scale_factor, flip, ori_shape, img_id, filename
    gt_bboxes  per image [G, 4] float32, x1 y1 x2 y2 in network-input pixels
    gt_labels  per image [G] int64 in [0, num_classes)
    gt_bboxes_ignore  per image [I, 4] (crowd boxes)
    gt_masks   per image [G, H_i, W_i] uint8 (only when masks are loaded)
"""

from __future__ import annotations

import functools
import json
import os.path as osp
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import get_preprocess_cfg
from ..datasets.pipeline import load_image, normalize, pad_to, rescale_size
from ..errors import ConfigError
from ..settings import parse_settings
from ..spec import PreprocessConfig
from .settings import (
    DatasetSettings,
    DataSettings,
    LoaderSettings,
    PrefixSettings,
    TrainData,
    parse_own_keys,
    section,
)

if TYPE_CHECKING:  # imported where used
    from mmengine.config import Config


@dataclass(frozen=True)
class TrainTransformConfig:
    """Training-time image transform.

    Attributes:
        preprocess: normalisation and padding (shared with the test pipeline).
        scale: train ``Resize`` scale (``(long, short)`` with ``keep_ratio``, else ``(w, h)``).
        keep_ratio: keep the aspect ratio.
        flip_ratio: probability of a horizontal flip.
    """

    preprocess: PreprocessConfig
    scale: tuple[int, int]
    keep_ratio: bool = True
    flip_ratio: float = 0.5


def _unwrap(dataset):
    while isinstance(dataset, Mapping) and 'dataset' in dataset and 'ann_file' not in dataset:
        dataset = dataset['dataset']  # RepeatDataset / ClassBalancedDataset wrappers
    return dataset


class NoTrainingSetError(ConfigError):
    """The config names no training set (other tools fall back to the test set)."""


def _no_training_set(cfg) -> ConfigError:
    return NoTrainingSetError(
        f'{getattr(cfg, "filename", "config")}: no training set '
        '(`data.train` or `train_dataloader.dataset`)'
    )


def train_data_settings(cfg: Config) -> TrainData:
    """The detector's training set, from a 3.x ``train_dataloader`` or a 2.x ``data.train``;
    paths joined with ``data_root``; ``classes`` from the set's ``classes`` /
    ``metainfo.classes`` or None; batch size and workers default to 2."""
    is_3x = isinstance(section(cfg, 'train_dataloader'), Mapping)
    if is_3x:
        loader = parse_own_keys(
            LoaderSettings, section(cfg, 'train_dataloader'), 'train_dataloader'
        )
        raw, where = _unwrap(loader.dataset), 'train_dataloader.dataset'
        batch_size, workers = loader.batch_size, loader.num_workers
    else:
        data = parse_own_keys(DataSettings, section(cfg, 'data'), 'data')
        raw, where = _unwrap(data.train), 'data.train'
        batch_size, workers = data.samples_per_gpu, data.workers_per_gpu
    if not isinstance(raw, Mapping) or 'ann_file' not in raw:
        raise _no_training_set(cfg)
    dataset = parse_own_keys(DatasetSettings, raw, where)
    if dataset.ann_file is None:
        raise _no_training_set(cfg)
    if is_3x:
        prefix = dataset.data_prefix or ''
        if isinstance(prefix, Mapping):
            prefix = parse_own_keys(PrefixSettings, prefix, f'{where}.data_prefix').img or ''
        pipeline, classes = dataset.pipeline, dataset.metainfo_classes(where)
    else:
        prefix = dataset.img_prefix or ''
        pipeline = dataset.pipeline or _top_level_pipeline(cfg)
        classes = dataset.classes
    root = dataset.data_root or ''
    return TrainData(
        ann_file=osp.join(root, dataset.ann_file),
        img_prefix=osp.join(root, prefix),
        pipeline=pipeline,
        classes=classes,
        batch_size=2 if batch_size is None else batch_size,
        num_workers=2 if workers is None else workers,
    )


@dataclass(frozen=True)
class _TopLevelPipeline:
    train_pipeline: tuple[dict, ...] = ()


def _top_level_pipeline(cfg) -> tuple[dict, ...]:
    """A 2.x config's ``train_pipeline`` variable (when ``data.train`` names no pipeline)."""
    values = {'train_pipeline': section(cfg, 'train_pipeline') or ()}
    return parse_settings(_TopLevelPipeline, values, 'config').train_pipeline


@dataclass(frozen=True)
class _StepType:
    type: str = ''


@dataclass(frozen=True)
class _ResizeStep:
    """``Resize``: 2.x ``img_scale`` (keep_ratio by default) or 3.x ``scale``."""

    img_scale: tuple[int, int] | tuple[tuple[int, int], ...] | None = None
    scale: tuple[int, int] | tuple[tuple[int, int], ...] | None = None
    keep_ratio: bool | None = None


@dataclass(frozen=True)
class _FlipStep:
    """``RandomFlip``: 2.x ``flip_ratio`` or 3.x ``prob``."""

    flip_ratio: float | None = None
    prob: float | None = None


def _resize_scale(step: _ResizeStep, where: str) -> tuple[int, int]:
    value = step.img_scale if step.img_scale is not None else step.scale
    if value and isinstance(value[0], tuple):
        if len(value) != 1:
            raise ConfigError(f'{where}: multi-scale Resize is not supported (one scale)')
        value = value[0]
    if not value:
        raise ConfigError(f'{where}: Resize needs `img_scale` or `scale`')
    return value


def get_train_transform_cfg(cfg: Config) -> TrainTransformConfig:
    """The train pipeline's ``Resize`` scale and ``RandomFlip`` ratio, plus the test-time
    normalisation and padding."""
    scale, keep_ratio, flip_ratio = None, True, 0.0
    for i, raw in enumerate(train_data_settings(cfg).pipeline):
        where = f'train pipeline[{i}]'
        kind = parse_own_keys(_StepType, raw, where).type.rsplit('.', 1)[-1]
        if kind == 'Resize':
            step = parse_own_keys(_ResizeStep, raw, where)
            scale = _resize_scale(step, where)
            keep_ratio = step.keep_ratio if step.keep_ratio is not None else 'img_scale' in raw
        elif kind == 'RandomFlip':
            step = parse_own_keys(_FlipStep, raw, where)
            ratio = step.flip_ratio if step.flip_ratio is not None else step.prob
            flip_ratio = ratio if ratio is not None else 0.5
    if scale is None:
        raise ConfigError(f'{getattr(cfg, "filename", "config")}: no Resize in the train pipeline')
    return TrainTransformConfig(get_preprocess_cfg(cfg), scale, keep_ratio, flip_ratio)


def polygons_or_rle_to_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, RLE or uncompressed RLE) -> ``[H, W]`` uint8."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation.get('counts'), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(np.uint8)


class CocoTrainDataset(Dataset):
    """COCO-format training set (MMDetection's ``CocoDataset`` in training mode).

    Images without usable annotations are skipped; crowd boxes become ignore boxes; boxes with
    ``w < 1``, ``h < 1`` or no area are dropped. Label ``i`` is the category named
    ``classes[i]``, or without ``classes`` the ``i``-th category by id.

    Args:
        ann_file, img_prefix: the annotation json and the image folder.
        transform: see :class:`TrainTransformConfig`.
        with_mask: also load instance masks.
        classes: class names to train (a subset of the categories, in label order).
        seed: base seed of the flip draws (each item draws from ``seed``, the epoch and its
            index, so results do not depend on the number of loader workers).
    """

    def __init__(
        self,
        ann_file: str,
        img_prefix: str,
        transform: TrainTransformConfig,
        with_mask: bool = False,
        classes: Sequence[str] | None = None,
        seed: int = 0,
    ):
        with open(ann_file, encoding='utf-8') as f:
            coco = json.load(f)
        self.img_prefix = img_prefix
        self.transform = transform
        self.with_mask = with_mask
        self.seed = seed
        self.epoch = 0
        names = {c['id']: c['name'] for c in coco['categories']}
        if classes is None:
            self.cat_ids = sorted(names)
        else:
            by_name = {name: cat_id for cat_id, name in names.items()}
            missing = [c for c in classes if c not in by_name]
            if missing:
                raise ConfigError(
                    f'classes {missing} are not categories of {ann_file} ({", ".join(by_name)})'
                )
            self.cat_ids = [by_name[c] for c in classes]
        self.class_names = tuple(names[i] for i in self.cat_ids)
        cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        anns: dict[int, list] = {}
        for ann in coco['annotations']:
            anns.setdefault(ann['image_id'], []).append(ann)
        self.items = []
        for info in sorted(coco['images'], key=lambda i: i['id']):
            boxes, labels, ignore, segms = [], [], [], []
            for ann in anns.get(info['id'], []):
                x, y, w, h = ann['bbox']
                if ann.get('area', w * h) <= 0 or w < 1 or h < 1:
                    continue
                if ann['category_id'] not in cat2label:
                    continue
                box = [x, y, x + w, y + h]
                if ann.get('iscrowd', 0):
                    ignore.append(box)
                    continue
                boxes.append(box)
                labels.append(cat2label[ann['category_id']])
                segms.append(ann.get('segmentation'))
            if not boxes:
                continue  # MMDetection's filter_empty_gt
            self.items.append(
                dict(
                    info=info,
                    boxes=np.array(boxes, np.float32).reshape(-1, 4),
                    labels=np.array(labels, np.int64),
                    ignore=np.array(ignore, np.float32).reshape(-1, 4),
                    segms=segms,
                )
            )

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        info = item['info']
        image = load_image(osp.join(self.img_prefix, info['file_name']))
        ori_h, ori_w = image.shape[:2]
        masks = None
        if self.with_mask:
            masks = np.stack([polygons_or_rle_to_mask(s, ori_h, ori_w) for s in item['segms']])
        rng = np.random.default_rng([self.seed, self.epoch, index])
        flip = rng.random() < self.transform.flip_ratio
        sample = transform_sample(image, item['boxes'], item['ignore'], masks, self.transform, flip)
        sample['gt_labels'] = torch.from_numpy(item['labels'])
        sample['img_meta'].update(
            img_id=info['id'], filename=info['file_name'], ori_shape=(ori_h, ori_w)
        )
        return sample


def _flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def transform_sample(
    image: np.ndarray,
    boxes: np.ndarray,
    ignore: np.ndarray,
    masks: np.ndarray | None,
    cfg: TrainTransformConfig,
    flip: bool,
) -> dict:
    """One image and its annotations -> network input and targets (see the module docstring).

    Args:
        image: ``HxWx3`` uint8 BGR.
        boxes, ignore: ``[G, 4]`` / ``[I, 4]`` in image pixels.
        masks: ``[G, H, W]`` uint8 or None.
        flip: flip horizontally (after resizing, as MMDetection's pipeline order).
    """
    ori_h, ori_w = image.shape[:2]
    if cfg.keep_ratio:
        (new_w, new_h), _ = rescale_size(ori_w, ori_h, cfg.scale)
    else:
        new_w, new_h = cfg.scale
    if (new_w, new_h) != (ori_w, ori_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    scale_factor = np.array([new_w / ori_w, new_h / ori_h] * 2, dtype=np.float32)

    def scale_boxes(b: np.ndarray) -> np.ndarray:
        b = b * scale_factor
        b[:, 0::2] = b[:, 0::2].clip(0, new_w)  # bbox_clip_border
        b[:, 1::2] = b[:, 1::2].clip(0, new_h)
        return b

    boxes, ignore = scale_boxes(boxes), scale_boxes(ignore)
    if masks is not None and (new_w, new_h) != (ori_w, ori_h):
        masks = np.stack(
            [cv2.resize(m, (new_w, new_h), interpolation=cv2.INTER_NEAREST) for m in masks]
        )
    if flip:
        image = image[:, ::-1]
        boxes, ignore = _flip_boxes(boxes, new_w), _flip_boxes(ignore, new_w)
        if masks is not None:
            masks = masks[:, :, ::-1]

    pre = cfg.preprocess
    image = normalize(image, pre.mean, pre.std, pre.to_rgb)
    pad_h, pad_w = new_h, new_w
    if pre.size_divisor:
        pad_h = -(-new_h // pre.size_divisor) * pre.size_divisor
        pad_w = -(-new_w // pre.size_divisor) * pre.size_divisor
    image = pad_to(image, pad_h, pad_w, pre.pad_value)
    sample = dict(
        img=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        img_meta=dict(
            img_shape=(new_h, new_w), pad_shape=(pad_h, pad_w), scale_factor=scale_factor, flip=flip
        ),
        gt_bboxes=torch.from_numpy(np.ascontiguousarray(boxes, np.float32)),
        gt_bboxes_ignore=torch.from_numpy(np.ascontiguousarray(ignore, np.float32)),
    )
    if masks is not None:
        sample['gt_masks'] = torch.from_numpy(np.ascontiguousarray(masks))
    return sample


def collate_train(samples: Sequence[dict], pad_value: float = 0.0) -> dict:
    """Samples -> a batch (see the module docstring); images padded to the largest."""
    height = max(s['img'].shape[1] for s in samples)
    width = max(s['img'].shape[2] for s in samples)
    img = torch.full((len(samples), 3, height, width), pad_value, dtype=torch.float32)
    for i, s in enumerate(samples):
        img[i, :, : s['img'].shape[1], : s['img'].shape[2]] = s['img']
    batch = dict(
        img=img,
        img_metas=[dict(s['img_meta'], batch_input_shape=(height, width)) for s in samples],
        gt_bboxes=[s['gt_bboxes'] for s in samples],
        gt_labels=[s['gt_labels'] for s in samples],
        gt_bboxes_ignore=[s['gt_bboxes_ignore'] for s in samples],
    )
    if all('gt_masks' in s for s in samples):
        batch['gt_masks'] = [s['gt_masks'] for s in samples]
    return batch


class GroupedBatchSampler(Sampler):
    """Shuffled batches of images with the same orientation (MMDetection's ``GroupSampler``:
    landscape and portrait images are never padded into one batch).

    The order depends only on ``seed`` and the epoch set with :meth:`set_epoch`.
    """

    def __init__(self, landscape: Sequence[bool], batch_size: int, seed: int = 0):
        self.groups = [
            [i for i, flag in enumerate(landscape) if flag == value] for value in (True, False)
        ]
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        batches = []
        for group in self.groups:
            order = [group[i] for i in torch.randperm(len(group), generator=gen).tolist()]
            batches += [
                order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)
            ]
        return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return sum(-(-len(g) // self.batch_size) for g in self.groups)


def build_train_loader(
    dataset: CocoTrainDataset, batch_size: int, num_workers: int = 0, seed: int = 0
) -> DataLoader:
    """A loader of orientation-grouped, shuffled batches; call ``loader.batch_sampler.set_epoch``
    and ``dataset.set_epoch`` before each epoch (a resumed run then sees the same batches)."""
    landscape = [item['info']['width'] >= item['info']['height'] for item in dataset.items]
    pad_value = dataset.transform.preprocess.pad_value
    return DataLoader(
        dataset,
        batch_sampler=GroupedBatchSampler(landscape, batch_size, seed),
        num_workers=num_workers,
        collate_fn=functools.partial(collate_train, pad_value=pad_value),
    )
