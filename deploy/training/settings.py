"""Typed training settings, read once from the config by the same parser as the test-time
settings (:func:`deploy.settings.parse_settings`): a mistyped value is one error that names its
key, not a traceback or a value silently used wrong.

* the schedule: ``optimizer = dict(type='SGD' | 'Adam' | 'AdamW', lr=..., momentum=...,
  weight_decay=...)`` (Adam/AdamW also take ``betas``, ``eps``; ``paramwise_cfg`` is accepted and
  not applied), ``optimizer_config = dict(grad_clip=None | dict(max_norm=..., norm_type=2))``,
  ``lr_config = dict(policy=..., step=..., gamma=..., min_lr=... | min_lr_ratio=..., by_epoch=...,
  warmup=..., warmup_iters=..., warmup_ratio=...)`` (see :class:`deploy.training.optim.LrSchedule`)
  and the epoch count (``runner.max_epochs``, 3.x ``train_cfg.max_epochs`` or ``total_epochs``);
* the training set: 2.x ``data.train`` (``samples_per_gpu``, ``workers_per_gpu``) or 3.x
  ``train_dataloader`` (``batch_size``, ``num_workers``, ``dataset``), and its pipeline steps;
* the model's ``train_cfg`` (assigners, samplers, RPN proposals of two-stage detectors) and the
  ``Pretrained`` ``init_cfg`` of its backbone / neck;
* the classifier's loss (``model.head.loss``) and ``model.train_cfg``.

Sections that only training reads (``optimizer``, ``runner``, ``model.train_cfg``, ``init_cfg``)
refuse unknown keys. Dicts that other readers share (a data set, a pipeline step, a loss of the
zoo's heads, mmengine's ``train_cfg`` loop) are read for their own keys only
(:func:`parse_own_keys`): the rest belongs to those readers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ..config import missing_key_error
from ..config.reading import lookup
from ..errors import ConfigError
from ..settings import parse_settings
from ..spec import RpnSettings

T = TypeVar('T')


def section(cfg: Any, dotted: str) -> Mapping | Any:
    """``cfg.<dotted>`` as a plain dict (``None`` when unset); mmengine's ``_delete_`` marker of a
    merged section is dropped. A value that is not a dict is returned for the parser to refuse."""
    value = lookup(cfg, dotted)
    if not isinstance(value, Mapping):
        return value
    return {k: v for k, v in value.items() if k != '_delete_'}


def parse_own_keys(cls: type[T], values: Any, where: str) -> T:
    """:func:`parse_settings` over the keys of ``values`` that are fields of ``cls``: for dicts
    that other readers share (a data set, a pipeline step), whose other keys are theirs."""
    if isinstance(values, Mapping):
        own = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in own}
    return parse_settings(cls, values, where)


# --------------------------------------------------------------------------------------------
# the schedule
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizerSettings:
    """``optimizer``: the optimiser and its hyper-parameters."""

    type: str = 'SGD'
    lr: float | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    #: accepted for MMDetection configs; per-parameter settings are not applied
    paramwise_cfg: dict | None = None


@dataclass(frozen=True)
class GradClipSettings:
    """``optimizer_config.grad_clip``: clip the gradients' global norm."""

    max_norm: float
    norm_type: float = 2.0


@dataclass(frozen=True)
class OptimizerConfigSettings:
    """``optimizer_config`` (the keys this loop reads: ``grad_clip``)."""

    grad_clip: GradClipSettings | None = None


@dataclass(frozen=True)
class LrSettings:
    """``lr_config``: the learning-rate policy and its warm-up (mmcv's ``LrUpdaterHook``)."""

    policy: str = 'fixed'
    #: ``step``: a list of epochs, or an int (decay every that many epochs)
    step: tuple[int, ...] | int = ()
    gamma: float = 0.1
    by_epoch: bool = True
    min_lr: float | None = None
    min_lr_ratio: float = 0.0
    warmup: str | None = None
    warmup_iters: int = 0
    warmup_ratio: float = 0.1


@dataclass(frozen=True)
class RunnerSettings:
    """``runner`` (MMDetection 2.x): the epoch count."""

    type: str = 'EpochBasedRunner'
    max_epochs: int | None = None
    max_iters: int | None = None


@dataclass(frozen=True)
class TrainLoopSettings:
    """The epoch count of a 3.x ``train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=N)``."""

    max_epochs: int | None = None


@dataclass(frozen=True)
class TotalEpochsSettings:
    """The oldest spelling of the epoch count: a top-level ``total_epochs = N``."""

    total_epochs: int | None = None


def epoch_count(cfg: Any) -> int:
    """``runner.max_epochs`` (2.x), ``train_cfg.max_epochs`` (3.x loop) or ``total_epochs``."""
    runner = parse_settings(RunnerSettings, section(cfg, 'runner'), 'runner')
    if runner.max_epochs:
        return runner.max_epochs
    loop = section(cfg, 'train_cfg')  # 3.x; a 2.x config may carry an old model train_cfg here
    loop = parse_own_keys(
        TrainLoopSettings, loop if isinstance(loop, Mapping) else None, 'train_cfg'
    )
    if loop.max_epochs:
        return loop.max_epochs
    total = parse_settings(
        TotalEpochsSettings, {'total_epochs': lookup(cfg, 'total_epochs')}, 'config'
    )
    if total.total_epochs:
        return total.total_epochs
    raise ConfigError('the config sets no epoch count (`runner.max_epochs`)')


@dataclass(frozen=True)
class ScheduleSettings:
    """What the epoch loop reads from a config: optimiser, gradient clipping, LR schedule and
    the number of epochs the schedule spans."""

    optimizer: OptimizerSettings
    grad_clip: GradClipSettings | None
    lr: LrSettings
    epochs: int

    @property
    def base_lr(self) -> float:
        return float(self.optimizer.lr)


def schedule_settings(cfg: Any) -> ScheduleSettings:
    """The typed ``optimizer``, ``optimizer_config.grad_clip``, ``lr_config`` and epoch count of
    ``cfg``."""
    optimizer = parse_settings(OptimizerSettings, section(cfg, 'optimizer'), 'optimizer')
    if optimizer.lr is None:
        raise missing_key_error('optimizer.lr', cfg)
    clip = parse_settings(
        OptimizerConfigSettings, section(cfg, 'optimizer_config'), 'optimizer_config'
    )
    lr = parse_settings(LrSettings, section(cfg, 'lr_config'), 'lr_config')
    return ScheduleSettings(optimizer, clip.grad_clip, lr, epoch_count(cfg))


# --------------------------------------------------------------------------------------------
# the training set
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoaderSettings:
    """3.x ``train_dataloader`` (its own keys)."""

    batch_size: int | None = None
    num_workers: int | None = None
    dataset: dict | None = None


@dataclass(frozen=True)
class DataSettings:
    """2.x ``data`` (its own keys for training)."""

    samples_per_gpu: int | None = None
    workers_per_gpu: int | None = None
    train: dict | None = None


@dataclass(frozen=True)
class MetaInfoSettings:
    """3.x ``dataset.metainfo`` (its own keys)."""

    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatasetSettings:
    """A training set's keys this job reads: 2.x ``data.train`` (``img_prefix``; a classifier's
    ``data_prefix`` folder) or 3.x ``train_dataloader.dataset`` (``data_prefix=dict(img=...)``,
    or ``dict(img_path=...)`` for a classifier)."""

    ann_file: str | None = None
    data_root: str | None = None
    img_prefix: str | None = None
    data_prefix: str | dict | None = None
    pipeline: tuple[dict, ...] = ()
    classes: tuple[str, ...] | None = None
    metainfo: dict | None = None

    def metainfo_classes(self, where: str) -> tuple[str, ...] | None:
        return parse_own_keys(MetaInfoSettings, self.metainfo, f'{where}.metainfo').classes


@dataclass(frozen=True)
class PrefixSettings:
    """3.x ``data_prefix`` (its own keys): ``img`` (MMDetection) or ``img_path`` (MMPretrain)."""

    img: str | None = None
    img_path: str | None = None


@dataclass(frozen=True)
class TrainData:
    """Where the training set is and how it is batched.

    Attributes:
        ann_file: the annotation file (``data_root`` joined), or None (a classifier's folder set).
        img_prefix: the image folder (``data_root`` joined).
        pipeline: the train pipeline's steps (config dicts, read by the job's transforms).
        classes: the class names to train, in label order, or None (the set's own).
        batch_size, num_workers: of the loader.
    """

    ann_file: str | None
    img_prefix: str
    pipeline: tuple[dict, ...]
    classes: tuple[str, ...] | None
    batch_size: int
    num_workers: int


# --------------------------------------------------------------------------------------------
# the detector's train_cfg and init_cfg
# --------------------------------------------------------------------------------------------


def _check_type(values: Mapping, supported: tuple[str, ...], what: str, where: str) -> None:
    kind = lookup(values, 'type')
    if kind is not None and kind not in supported:
        raise ConfigError(
            f'unsupported {what} {kind!r} in `{where}` (supported: {", ".join(supported)})'
        )


@dataclass(frozen=True)
class AssignerSettings:
    """``train_cfg.assigner``: MMDetection's ``MaxIoUAssigner`` (see
    :class:`deploy.training.assigners.MaxIoUAssigner` for the keys)."""

    TYPES: ClassVar[tuple[str, ...]] = ('MaxIoUAssigner',)

    type: str = 'MaxIoUAssigner'
    pos_iou_thr: float | None = None
    neg_iou_thr: float | tuple[float, float] | None = None
    min_pos_iou: float = 0.0
    gt_max_assign_all: bool = True
    ignore_iof_thr: float = -1.0
    ignore_wrt_candidates: bool = True
    match_low_quality: bool = True
    #: accepted for MMDetection configs; everything runs on the batch's device
    gpu_assign_thr: int = -1
    #: accepted for MMDetection configs; the IoU is always :func:`bbox_overlaps`
    iou_calculator: dict | None = None

    @classmethod
    def check_raw(cls, values: Mapping, where: str) -> None:
        _check_type(values, cls.TYPES, 'assigner', where)

    def check_parsed(self, where: str) -> None:
        for key in ('pos_iou_thr', 'neg_iou_thr'):
            if getattr(self, key) is None:
                raise ConfigError(f'`{where}.{key}` is needed to train')


@dataclass(frozen=True)
class SamplerSettings:
    """``train_cfg.sampler``: ``PseudoSampler`` or ``RandomSampler`` (see
    :class:`deploy.training.samplers.RandomSampler`)."""

    TYPES: ClassVar[tuple[str, ...]] = ('PseudoSampler', 'RandomSampler')

    type: str = 'PseudoSampler'
    num: int | None = None
    pos_fraction: float | None = None
    neg_pos_ub: int = -1
    add_gt_as_proposals: bool = True

    @classmethod
    def check_raw(cls, values: Mapping, where: str) -> None:
        _check_type(values, cls.TYPES, 'sampler', where)

    def check_parsed(self, where: str) -> None:
        if self.type == 'RandomSampler':
            for key in ('num', 'pos_fraction'):
                if getattr(self, key) is None:
                    raise ConfigError(f'`{where}.{key}` is needed by RandomSampler')


@dataclass(frozen=True)
class DenseTrainSettings:
    """``model.train_cfg`` of a dense (anchor) head, or ``train_cfg.rpn`` of a two-stage one."""

    assigner: AssignerSettings | None = None
    #: None: MMDetection 2.x's default for dense heads, every positive and negative
    sampler: SamplerSettings | None = None
    allowed_border: int = -1
    pos_weight: float = -1.0
    debug: bool = False

    def check_parsed(self, where: str) -> None:
        if self.assigner is None:
            raise ConfigError(f'`{where}.assigner` is needed to train')


@dataclass(frozen=True)
class RcnnTrainSettings:
    """``model.train_cfg.rcnn``: sampled RoIs of the R-CNN stage."""

    assigner: AssignerSettings | None = None
    sampler: SamplerSettings | None = None
    pos_weight: float = -1.0
    debug: bool = False
    #: accepted for MMDetection configs; the mask targets take the mask head's output size
    mask_size: int = 28

    def check_parsed(self, where: str) -> None:
        for key in ('assigner', 'sampler'):
            if getattr(self, key) is None:
                raise ConfigError(f'`{where}.{key}` is needed to train')


@dataclass(frozen=True)
class SoftLabelAssignerSettings:
    """``train_cfg.assigner`` of RTMDet: ``DynamicSoftLabelAssigner`` (see
    :class:`deploy.training.rtmdet_targets.DynamicSoftLabelAssigner`)."""

    TYPES: ClassVar[tuple[str, ...]] = ('DynamicSoftLabelAssigner',)

    type: str = 'DynamicSoftLabelAssigner'
    soft_center_radius: float = 3.0
    topk: int = 13
    iou_weight: float = 3.0
    #: accepted for MMDetection configs; the IoU is always :func:`bbox_overlaps`
    iou_calculator: dict | None = None

    @classmethod
    def check_raw(cls, values: Mapping, where: str) -> None:
        _check_type(values, cls.TYPES, 'assigner', where)

    def check_parsed(self, where: str) -> None:
        if self.topk < 1:
            raise ConfigError(f'`{where}.topk` must be at least 1, got {self.topk}')


@dataclass(frozen=True)
class SoftLabelTrainSettings:
    """``model.train_cfg`` of RTMDet's head."""

    assigner: SoftLabelAssignerSettings = field(default_factory=SoftLabelAssignerSettings)
    allowed_border: int = -1
    pos_weight: float = -1.0
    debug: bool = False


@dataclass(frozen=True)
class TwoStageTrainSettings:
    """``model.train_cfg`` of a two-stage detector."""

    rpn: DenseTrainSettings | None = None
    rpn_proposal: RpnSettings | None = None
    rcnn: RcnnTrainSettings | None = None

    def check_parsed(self, where: str) -> None:
        for key in ('rpn', 'rpn_proposal', 'rcnn'):
            if getattr(self, key) is None:
                raise ConfigError(f'{where}.{key} is needed to train a two-stage detector')


@dataclass(frozen=True)
class PretrainedInit:
    """``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` of a backbone / neck."""

    type: str = 'Pretrained'
    checkpoint: str = ''
    prefix: str | None = None
    #: accepted for MMDetection configs; checkpoints always load to the CPU
    map_location: str | None = None


def pretrained_inits(model_cfg: Any) -> dict[str, PretrainedInit]:
    """The ``Pretrained`` ``init_cfg`` of the detector's ``backbone`` and ``neck`` (by child);
    other initialisers (or a list of them) are MMDetection's defaults, applied by
    :func:`deploy.training.init.init_weights`."""
    inits = {}
    for name in ('backbone', 'neck'):
        init_cfg = section(model_cfg, f'{name}.init_cfg')
        if lookup(init_cfg, 'type') == 'Pretrained':
            inits[name] = parse_settings(PretrainedInit, init_cfg, f'model.{name}.init_cfg')
    return inits


# --------------------------------------------------------------------------------------------
# the classifier
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierTrainSettings:
    """``model.train_cfg`` of an image classifier (its own keys)."""

    augments: tuple[dict, ...] | dict | None = None

    def check_parsed(self, where: str) -> None:
        if self.augments:
            raise ConfigError(f'{where}.augments (Mixup / CutMix) is not supported')


@dataclass(frozen=True)
class ClassificationLossSettings:
    """``model.head.loss`` of a classifier (its own keys): ``CrossEntropyLoss`` (optionally
    ``class_weight``) or ``LabelSmoothLoss`` (``mode='original'``), times ``loss_weight``."""

    type: str = 'CrossEntropyLoss'
    loss_weight: float = 1.0
    use_sigmoid: bool = False
    use_soft: bool = False
    class_weight: tuple[float, ...] | None = None
    mode: str = 'original'
    label_smooth_val: float = 0.1

    @property
    def kind(self) -> str:
        return self.type.rsplit('.', 1)[-1]
