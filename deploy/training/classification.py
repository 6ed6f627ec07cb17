"""Training of the zoo's image classifiers (MMClassification 0.x / MMPretrain 1.x semantics):
training-time data, the loss, and the loop behind ``tools/train.py`` for ``ImageClassifier``
configs.

Train pipeline steps (in config order; loading and packing steps are skipped)::

    RandomResizedCrop(size | scale, scale | crop_ratio_range, ratio | aspect_ratio_range,
                      max_attempts, backend, interpolation)
    RandomFlip(flip_prob | prob, direction='horizontal')
    Resize / ResizeEdge / CenterCrop        # the deterministic test-time steps
    Normalize                               # or the data_preprocessor (1.x)

Losses: the head's ``CrossEntropyLoss`` (optionally ``class_weight``) or ``LabelSmoothLoss``
(``mode='original'``), times ``loss_weight``. The optimiser, learning-rate schedule, checkpoints
and determinism are those of the detector loop (:mod:`deploy.training.loop`): with one ``seed``
the initial weights, batch order, crops and flips are fixed, and a resumed run continues exactly
as the uninterrupted one would have.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..config import get_model_cfg, get_preprocess_cfg, get_test_settings
from ..config.classification import PASS_THROUGH_TRANSFORMS, is_mmcls_0x, read_crop, read_resize
from ..datasets.classification import (
    ClassificationSamples,
    apply_resize,
    center_crop_box,
    load_classification_samples,
    resize_image,
)
from ..datasets.pipeline import collate, load_image, normalize
from ..errors import ConfigError
from ..models import build_detector
from ..spec import PreprocessConfig
from .data import GroupedBatchSampler
from .engine import TrainLog, fit, optimizer_step, seed_everything
from .init import init_weights

# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomResizedCrop:
    """A random crop of ``scale`` (area fraction) and ``ratio`` (w / h, log-uniform), resized
    to ``size = (h, w)``; after ``max_attempts`` misses, the centre crop of the allowed ratio
    (MMClassification's ``RandomResizedCrop.get_params``)."""

    size: tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    max_attempts: int = 10
    backend: str = 'cv2'
    interpolation: str = 'bilinear'

    def box(self, height: int, width: int, gen: np.random.Generator) -> tuple[int, int, int, int]:
        """``(top, left, h, w)`` of the crop in a ``height x width`` image."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(self.max_attempts):
            target_area = gen.uniform(*self.scale) * area
            aspect = math.exp(gen.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return (
                    int(gen.integers(0, height - h + 1)),
                    int(gen.integers(0, width - w + 1)),
                    h,
                    w,
                )
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: np.ndarray, gen: np.random.Generator) -> np.ndarray:
        top, left, h, w = self.box(image.shape[0], image.shape[1], gen)
        crop = image[top : top + h, left : left + w]
        return resize_image(crop, (self.size[1], self.size[0]), self.backend, self.interpolation)


@dataclass(frozen=True)
class RandomFlip:
    """Horizontal flip with probability ``prob``."""

    prob: float = 0.5

    def __call__(self, image: np.ndarray, gen: np.random.Generator) -> np.ndarray:
        return image[:, ::-1] if gen.random() < self.prob else image


@dataclass(frozen=True)
class FixedResize:
    """The test-time resize of ``preprocess`` (one edge to a length, or an exact size)."""

    preprocess: PreprocessConfig

    def __call__(self, image: np.ndarray, gen: np.random.Generator) -> np.ndarray:
        return apply_resize(image, self.preprocess)


@dataclass(frozen=True)
class CenterCrop:
    """The centre ``crop = (h, w)`` (MMCV's offsets, see :func:`center_crop_box`)."""

    crop: tuple[int, int]

    def __call__(self, image: np.ndarray, gen: np.random.Generator) -> np.ndarray:
        y1, y2, x1, x2 = center_crop_box(image.shape[0], image.shape[1], self.crop)
        return image[y1:y2, x1:x2]


def _pair(value, where: str) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(value)
    raise ConfigError(f'{where} must be a number or a pair, got {value!r}')


def _random_resized_crop(transform: Mapping, file: str) -> RandomResizedCrop:
    """0.x: ``size`` (h, w), ``scale`` (area range), ``ratio``; 1.x: ``scale`` (the output
    size), ``crop_ratio_range``, ``aspect_ratio_range``."""
    if transform.get('efficientnet_style'):
        raise ConfigError(f'RandomResizedCrop(efficientnet_style=True) in {file} is not supported')
    if 'size' in transform:
        size, area = transform['size'], transform.get('scale', (0.08, 1.0))
        ratio = transform.get('ratio', (3 / 4, 4 / 3))
    else:
        size, area = transform.get('scale'), transform.get('crop_ratio_range', (0.08, 1.0))
        ratio = transform.get('aspect_ratio_range', (3 / 4, 4 / 3))
    return RandomResizedCrop(
        size=tuple(int(v) for v in _pair(size, f'RandomResizedCrop size in {file}')),
        scale=tuple(float(v) for v in _pair(area, f'RandomResizedCrop area range in {file}')),
        ratio=tuple(float(v) for v in _pair(ratio, f'RandomResizedCrop ratio in {file}')),
        max_attempts=int(transform.get('max_attempts', 10)),
        backend=transform.get('backend', 'cv2'),
        interpolation=transform.get('interpolation', 'bilinear'),
    )


def build_train_steps(pipeline: list, cfg) -> list:
    """The random and fixed image steps of a classifier's train pipeline, in order."""
    file = getattr(cfg, 'filename', 'config')
    where = 'the train pipeline'
    steps: list = []
    for transform in pipeline:
        name = str(transform.get('type', '')).rsplit('.', 1)[-1]
        if name == 'RandomResizedCrop':
            steps.append(_random_resized_crop(transform, file))
        elif name == 'RandomFlip':
            direction = transform.get('direction', 'horizontal')
            if direction != 'horizontal':
                raise ConfigError(f'RandomFlip(direction={direction!r}) in {file}: only horizontal')
            steps.append(RandomFlip(float(transform.get('flip_prob', transform.get('prob', 0.5)))))
        elif name in ('Resize', 'ResizeEdge'):
            steps.append(FixedResize(PreprocessConfig(**read_resize(transform, name, where, file))))
        elif name == 'CenterCrop':
            crop = read_crop(transform, where, file, order_wh=not is_mmcls_0x(cfg))
            steps.append(CenterCrop(crop))
        elif name != 'Normalize' and name not in PASS_THROUGH_TRANSFORMS:
            raise ConfigError(
                f'{name} in the train pipeline of {file} is not supported (RandomResizedCrop, '
                'RandomFlip, Resize, ResizeEdge, CenterCrop, Normalize)'
            )
    return steps


def get_classification_train_cfg(cfg) -> dict:
    """``dict(img_prefix, ann_file, classes, pipeline, batch_size, num_workers)`` of the training
    set: 1.x ``train_dataloader`` or 0.x ``data.train`` (``samples_per_gpu``,
    ``workers_per_gpu``)."""
    file = getattr(cfg, 'filename', 'config')
    loader = cfg.get('train_dataloader')
    if isinstance(loader, Mapping):
        dataset = loader.get('dataset') or {}
        root = dataset.get('data_root') or ''
        prefix = dataset.get('data_prefix') or ''
        if isinstance(prefix, Mapping):
            prefix = prefix.get('img_path', prefix.get('img', '')) or ''
        ann_file = dataset.get('ann_file')
        batch_size, workers = loader.get('batch_size', 32), loader.get('num_workers', 2)
        img_prefix = os.path.join(root, prefix)
        ann_file = os.path.join(root, ann_file) if ann_file else None
    else:
        data = cfg.get('data')
        dataset = data.get('train') if isinstance(data, Mapping) else None
        if not isinstance(dataset, Mapping) or not dataset.get('data_prefix'):
            raise ConfigError(f'{file}: no training set (`data.train` or `train_dataloader`)')
        img_prefix, ann_file = dataset['data_prefix'], dataset.get('ann_file') or None
        batch_size, workers = data.get('samples_per_gpu', 32), data.get('workers_per_gpu', 2)
    classes = (dataset.get('metainfo') or {}).get('classes', dataset.get('classes'))
    return dict(
        img_prefix=img_prefix,
        ann_file=ann_file,
        classes=tuple(classes) if classes else None,
        pipeline=list(dataset.get('pipeline') or []),
        batch_size=int(batch_size),
        num_workers=int(workers),
    )


class ClassificationTrainDataset(Dataset):
    """``dataset[i]`` -> ``(tensor [3, h, w] float32, meta)`` with ``meta['gt_label']``; the random
    steps draw from a generator seeded by ``(seed, epoch, i)``."""

    def __init__(
        self, samples: ClassificationSamples, steps: list, preprocess: PreprocessConfig, seed: int
    ):
        self.samples = samples
        self.steps = steps
        self.preprocess = preprocess
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        gen = np.random.default_rng([self.seed, self.epoch, index])
        image = load_image(self.samples.paths[index])
        for step in self.steps:
            image = step(image, gen)
        pre = self.preprocess
        image = normalize(np.ascontiguousarray(image), pre.mean, pre.std, pre.to_rgb)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return tensor, dict(img_shape=image.shape[:2], gt_label=int(self.samples.labels[index]))


# --------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------


def classification_loss(head: nn.Module, logits: Tensor, labels: Tensor) -> Tensor:
    """The head's loss (``head.loss_cfg``) of ``logits [B, C]`` against ``labels [B]``."""
    cfg = dict(head.loss_cfg)
    kind = str(cfg.pop('type', 'CrossEntropyLoss')).rsplit('.', 1)[-1]
    weight = float(cfg.pop('loss_weight', 1.0))
    if kind == 'CrossEntropyLoss':
        if cfg.get('use_sigmoid') or cfg.get('use_soft'):
            raise ConfigError('CrossEntropyLoss with use_sigmoid / use_soft is not supported')
        class_weight = cfg.get('class_weight')
        if class_weight is not None:
            class_weight = logits.new_tensor(class_weight)
        return weight * F.cross_entropy(logits, labels, weight=class_weight)
    if kind == 'LabelSmoothLoss':
        if cfg.get('mode', 'original') != 'original':
            raise ConfigError(f'LabelSmoothLoss(mode={cfg["mode"]!r}) is not supported')
        smooth = float(cfg.get('label_smooth_val', 0.1))
        return weight * F.cross_entropy(logits, labels, label_smoothing=smooth)
    raise ConfigError(
        f'unsupported classification loss {kind!r} (CrossEntropyLoss, LabelSmoothLoss)'
    )


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def train_classifier(
    cfg,
    work_dir: str | os.PathLike,
    *,
    epochs: int | None = None,
    resume: str | None = None,
    seed: int = 0,
    num_workers: int | None = None,
    progress: bool = True,
    logger=print,
):
    """Train the config's classifier on its training set (see :func:`deploy.training.loop.train`
    for the arguments); returns a :class:`~deploy.training.engine.TrainResult` whose epoch losses
    also hold the training top-1 accuracy (``acc``, percent)."""
    start_time = time.perf_counter()
    work_dir = Path(work_dir)
    log = TrainLog(work_dir, logger)
    seed_everything(seed)
    model_cfg = get_model_cfg(cfg)
    model = build_detector(model_cfg, get_test_settings(cfg), getattr(cfg, 'filename', None))
    if getattr(model, 'train_cfg', {}).get('augments'):
        raise ConfigError('model.train_cfg.augments (Mixup / CutMix) is not supported')
    init_weights(model)
    model.train()
    data_cfg = get_classification_train_cfg(cfg)
    samples = load_classification_samples(
        data_cfg['img_prefix'], data_cfg['ann_file'], data_cfg['classes'], 'data.train'
    )
    class_names = samples.class_names or tuple(str(i) for i in range(model.num_classes))
    if len(class_names) != model.num_classes:
        raise ConfigError(
            f'the training set has {len(class_names)} classes, the head predicts '
            f'{model.num_classes}: set model.head.num_classes={len(class_names)}'
        )
    model.class_names = tuple(class_names)
    preprocess = get_preprocess_cfg(cfg)
    dataset = ClassificationTrainDataset(
        samples, build_train_steps(data_cfg['pipeline'], cfg), preprocess, seed
    )
    workers = data_cfg['num_workers'] if num_workers is None else num_workers
    loader = DataLoader(
        dataset,
        batch_sampler=GroupedBatchSampler([True] * len(dataset), data_cfg['batch_size'], seed),
        num_workers=workers,
        collate_fn=functools.partial(collate, pad_value=preprocess.pad_value),
    )

    def step(batch, optimizer, grad_clip) -> dict[str, float]:
        img, metas = batch
        labels = torch.as_tensor([m['gt_label'] for m in metas])
        logits = model(img)
        loss = classification_loss(model.head, logits, labels)
        optimizer_step(model, loss, optimizer, grad_clip)
        value = float(loss.detach())
        correct = int((logits.argmax(1) == labels).sum())
        seen = len(labels)
        return dict(loss=value, weighted_loss=value * seen, correct=correct, seen=seen)

    def per_image(sums: dict, batches: int) -> dict[str, float]:
        seen = max(sums.get('seen', 0), 1)
        loss, correct = sums.get('weighted_loss', 0.0), sums.get('correct', 0)
        return dict(loss=loss / seen, acc=100.0 * correct / seen)

    return fit(
        model,
        cfg,
        dataset,
        loader,
        class_names,
        step,
        work_dir=work_dir,
        log=log,
        seed=seed,
        epochs=epochs,
        resume=resume,
        progress=progress,
        epoch_means=per_image,
        describe=lambda means: f'loss {means["loss"]:.4f} train top-1 {means["acc"]:.1f}%',
        start_time=start_time,
    )
