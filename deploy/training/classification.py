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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from .engine import (
    TrainLog,
    TrainLogger,
    TrainOptions,
    TrainResult,
    fit,
    optimizer_step,
    seed_everything,
)
from .init import init_weights
from .settings import (
    ClassificationLossSettings,
    ClassifierTrainSettings,
    DatasetSettings,
    DataSettings,
    GradClipSettings,
    LoaderSettings,
    PrefixSettings,
    TrainData,
    parse_own_keys,
    section,
)

if TYPE_CHECKING:  # imported where used
    from mmengine.config import Config

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


@dataclass(frozen=True)
class _RandomResizedCropStep:
    """``RandomResizedCrop``'s keys: 0.x ``size`` (h, w), ``scale`` (area range), ``ratio``;
    1.x ``scale`` (the output size), ``crop_ratio_range``, ``aspect_ratio_range``."""

    size: int | tuple[int, int] | None = None
    scale: float | tuple[float, float] | None = None
    ratio: float | tuple[float, float] | None = None
    crop_ratio_range: float | tuple[float, float] | None = None
    aspect_ratio_range: float | tuple[float, float] | None = None
    max_attempts: int = 10
    backend: str = 'cv2'
    interpolation: str = 'bilinear'
    efficientnet_style: bool = False


@dataclass(frozen=True)
class _FlipStep:
    """``RandomFlip``'s keys: 0.x ``flip_prob``, 1.x ``prob``."""

    flip_prob: float | None = None
    prob: float | None = None
    direction: str = 'horizontal'


@dataclass(frozen=True)
class _StepType:
    type: str = ''


def _or(value, default):
    return default if value is None else value


def _random_resized_crop(transform: Mapping, where: str, file: str) -> RandomResizedCrop:
    step = parse_own_keys(_RandomResizedCropStep, transform, where)
    if step.efficientnet_style:
        raise ConfigError(f'RandomResizedCrop(efficientnet_style=True) in {file} is not supported')
    if 'size' in transform:
        size, area = step.size, _or(step.scale, (0.08, 1.0))
        ratio = _or(step.ratio, (3 / 4, 4 / 3))
    else:
        size, area = step.scale, _or(step.crop_ratio_range, (0.08, 1.0))
        ratio = _or(step.aspect_ratio_range, (3 / 4, 4 / 3))
    return RandomResizedCrop(
        size=tuple(int(v) for v in _pair(size, f'RandomResizedCrop size in {file}')),
        scale=tuple(float(v) for v in _pair(area, f'RandomResizedCrop area range in {file}')),
        ratio=tuple(float(v) for v in _pair(ratio, f'RandomResizedCrop ratio in {file}')),
        max_attempts=step.max_attempts,
        backend=step.backend,
        interpolation=step.interpolation,
    )


def _random_flip(transform: Mapping, where: str, file: str) -> RandomFlip:
    step = parse_own_keys(_FlipStep, transform, where)
    if step.direction != 'horizontal':
        raise ConfigError(f'RandomFlip(direction={step.direction!r}) in {file}: only horizontal')
    return RandomFlip(_or(step.flip_prob, _or(step.prob, 0.5)))


def build_train_steps(pipeline: Sequence[Mapping], cfg: Config) -> list:
    """The random and fixed image steps of a classifier's train pipeline, in order."""
    file = getattr(cfg, 'filename', 'config')
    where = 'the train pipeline'
    steps: list = []
    for i, transform in enumerate(pipeline):
        step_where = f'train pipeline[{i}]'
        name = parse_own_keys(_StepType, transform, step_where).type.rsplit('.', 1)[-1]
        if name == 'RandomResizedCrop':
            steps.append(_random_resized_crop(transform, step_where, file))
        elif name == 'RandomFlip':
            steps.append(_random_flip(transform, step_where, file))
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


def classification_train_data(cfg: Config) -> TrainData:
    """The classifier's training set: 1.x ``train_dataloader`` (``data_prefix`` a folder or
    ``dict(img_path=...)``) or 0.x ``data.train`` (``samples_per_gpu``, ``workers_per_gpu``);
    batch size 32 and 2 workers by default."""
    file = getattr(cfg, 'filename', 'config')
    if isinstance(section(cfg, 'train_dataloader'), Mapping):
        loader = parse_own_keys(
            LoaderSettings, section(cfg, 'train_dataloader'), 'train_dataloader'
        )
        dataset = parse_own_keys(DatasetSettings, loader.dataset, 'train_dataloader.dataset')
        prefix = dataset.data_prefix or ''
        if isinstance(prefix, Mapping):
            where = 'train_dataloader.dataset.data_prefix'
            parsed = parse_own_keys(PrefixSettings, prefix, where)
            prefix = _or(parsed.img_path, parsed.img) or ''
        root = dataset.data_root or ''
        img_prefix = os.path.join(root, prefix)
        ann_file = os.path.join(root, dataset.ann_file) if dataset.ann_file else None
        batch_size, workers = loader.batch_size, loader.num_workers
        where = 'train_dataloader.dataset'
    else:
        data = parse_own_keys(DataSettings, section(cfg, 'data'), 'data')
        where = 'data.train'
        dataset = parse_own_keys(DatasetSettings, data.train, where)
        if data.train is None or not dataset.data_prefix:
            raise ConfigError(f'{file}: no training set (`data.train` or `train_dataloader`)')
        if not isinstance(dataset.data_prefix, str):
            raise ConfigError(
                f'`{where}.data_prefix` must be a folder, got {dataset.data_prefix!r}'
            )
        img_prefix, ann_file = dataset.data_prefix, dataset.ann_file or None
        batch_size, workers = data.samples_per_gpu, data.workers_per_gpu
    classes = _or(dataset.metainfo_classes(where), dataset.classes)
    return TrainData(
        ann_file=ann_file,
        img_prefix=img_prefix,
        pipeline=dataset.pipeline,
        classes=classes or None,
        batch_size=_or(batch_size, 32),
        num_workers=_or(workers, 2),
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


def classification_loss(
    loss: ClassificationLossSettings | nn.Module, logits: Tensor, labels: Tensor
) -> Tensor:
    """The loss of ``logits [B, C]`` against ``labels [B]`` (``loss``: typed settings, or a head
    whose ``loss_cfg`` dict is parsed here)."""
    settings = loss if isinstance(loss, ClassificationLossSettings) else head_loss_settings(loss)
    kind, weight = settings.kind, settings.loss_weight
    if kind == 'CrossEntropyLoss':
        if settings.use_sigmoid or settings.use_soft:
            raise ConfigError('CrossEntropyLoss with use_sigmoid / use_soft is not supported')
        class_weight = settings.class_weight
        if class_weight is not None:
            class_weight = logits.new_tensor(class_weight)
        return weight * F.cross_entropy(logits, labels, weight=class_weight)
    if kind == 'LabelSmoothLoss':
        if settings.mode != 'original':
            raise ConfigError(f'LabelSmoothLoss(mode={settings.mode!r}) is not supported')
        return weight * F.cross_entropy(logits, labels, label_smoothing=settings.label_smooth_val)
    raise ConfigError(
        f'unsupported classification loss {kind!r} (CrossEntropyLoss, LabelSmoothLoss)'
    )


def head_loss_settings(head: nn.Module) -> ClassificationLossSettings:
    """The typed ``model.head.loss`` the head was built with."""
    return parse_own_keys(ClassificationLossSettings, head.loss_cfg, 'model.head.loss')


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def train_classifier(
    cfg: Config, options: TrainOptions, logger: TrainLogger = print
) -> TrainResult:
    """Train the config's classifier on its training set (see
    :func:`deploy.training.loop.run_training`); returns a :class:`TrainResult` whose epoch
    losses also hold the training top-1 accuracy (``acc``, percent)."""
    start_time = time.perf_counter()
    log = TrainLog(options.work_dir, logger)
    seed = options.seed
    seed_everything(seed)
    model_cfg = get_model_cfg(cfg)
    model = build_detector(model_cfg, get_test_settings(cfg), getattr(cfg, 'filename', None))
    parse_own_keys(ClassifierTrainSettings, model.train_cfg, 'model.train_cfg')
    loss_settings = head_loss_settings(model.head)
    init_weights(model)
    model.train()
    data = classification_train_data(cfg)
    samples = load_classification_samples(
        data.img_prefix, data.ann_file, data.classes, 'data.train'
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
        samples, build_train_steps(data.pipeline, cfg), preprocess, seed
    )
    workers = data.num_workers if options.num_workers is None else options.num_workers
    loader = DataLoader(
        dataset,
        batch_sampler=GroupedBatchSampler([True] * len(dataset), data.batch_size, seed),
        num_workers=workers,
        collate_fn=functools.partial(collate, pad_value=preprocess.pad_value),
    )

    def step(
        batch: tuple, optimizer: torch.optim.Optimizer, grad_clip: GradClipSettings | None
    ) -> dict[str, float]:
        img, metas = batch
        labels = torch.as_tensor([m['gt_label'] for m in metas])
        logits = model(img)
        loss = classification_loss(loss_settings, logits, labels)
        optimizer_step(model, loss, optimizer, grad_clip)
        value = float(loss.detach())
        correct = int((logits.argmax(1) == labels).sum())
        seen = len(labels)
        return dict(loss=value, weighted_loss=value * seen, correct=correct, seen=seen)

    def per_image(sums: dict, batches: int) -> dict[str, float]:
        # ``sums``: the step values added up over the epoch (empty after no batch)
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
        work_dir=options.work_dir,
        log=log,
        seed=seed,
        epochs=options.epochs,
        resume=options.resume,
        progress=options.progress,
        epoch_means=per_image,
        describe=lambda means: f'loss {means["loss"]:.4f} train top-1 {means["acc"]:.1f}%',
        start_time=start_time,
    )
