"""Typed training settings, read once from the config by the same parser as the test-time
settings (:func:`deploy.settings.parse_settings`): an unknown or mistyped key is one error that
names it, not a value silently ignored.

* ``optimizer = dict(type='SGD' | 'Adam' | 'AdamW', lr=..., momentum=..., weight_decay=...)``
  (Adam/AdamW also take ``betas``, ``eps``; ``paramwise_cfg`` is accepted and not applied);
* ``optimizer_config = dict(grad_clip=None | dict(max_norm=..., norm_type=2))``;
* ``lr_config = dict(policy=..., step=..., gamma=..., min_lr=... | min_lr_ratio=...,
  by_epoch=..., warmup=..., warmup_iters=..., warmup_ratio=...)`` (see
  :class:`deploy.training.optim.LrSchedule`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import missing_key_error
from ..settings import parse_settings


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
class ScheduleSettings:
    """What the epoch loop reads from a config: optimiser, gradient clipping, LR schedule."""

    optimizer: OptimizerSettings
    grad_clip: GradClipSettings | None
    lr: LrSettings

    @property
    def base_lr(self) -> float:
        return float(self.optimizer.lr)


def schedule_settings(cfg: Any) -> ScheduleSettings:
    """The typed ``optimizer``, ``optimizer_config.grad_clip`` and ``lr_config`` of ``cfg``."""
    optimizer = parse_settings(OptimizerSettings, _section(cfg, 'optimizer'), 'optimizer')
    if optimizer.lr is None:
        raise missing_key_error('optimizer.lr', cfg)
    clip = parse_settings(
        OptimizerConfigSettings, _section(cfg, 'optimizer_config'), 'optimizer_config'
    )
    lr = parse_settings(LrSettings, _section(cfg, 'lr_config'), 'lr_config')
    return ScheduleSettings(optimizer, clip.grad_clip, lr)


def _section(cfg: Any, key: str) -> Mapping | None:
    """``cfg[key]`` as a plain dict (``None`` when unset); mmengine's ``_delete_`` marker of a
    merged section is dropped."""
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return value  # refused by the parser with the key named
    return {k: v for k, v in value.items() if k != '_delete_'}
