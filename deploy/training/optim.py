"""Optimiser and learning-rate schedule from MMDetection 2.x config keys.

* ``optimizer = dict(type='SGD' | 'AdamW', lr=..., momentum=..., weight_decay=...)``
  (Adam/AdamW also take ``betas``, ``eps``);
* ``optimizer_config = dict(grad_clip=None | dict(max_norm=..., norm_type=2))``;
* ``lr_config = dict(policy='step', step=[e1, e2], gamma=0.1)`` (an int ``step=n``: times
  ``gamma`` every ``n`` epochs, as mmcv's ``StepLrUpdaterHook``) or
  ``dict(policy='CosineAnnealing', min_lr_ratio=... | min_lr=..., by_epoch=True)`` or
  ``dict(policy='fixed')``, each with optional ``warmup='linear' | 'constant' | 'exp'``,
  ``warmup_iters`` and ``warmup_ratio`` (mmcv's LrUpdaterHook semantics);
* ``runner = dict(type='EpochBasedRunner', max_epochs=N)`` (or a plain ``total_epochs = N``),
  read by :func:`deploy.training.settings.epoch_count`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..settings import parse_settings
from .settings import LrSettings, OptimizerSettings


def build_optimizer(
    model: nn.Module, settings: OptimizerSettings | Mapping
) -> torch.optim.Optimizer:
    """The optimiser over ``model``'s trainable parameters (``settings``: typed, or the config's
    ``optimizer`` dict)."""
    settings = parse_settings(OptimizerSettings, settings, 'optimizer')
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.type == 'SGD':
        return torch.optim.SGD(
            params,
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            nesterov=settings.nesterov,
        )
    if settings.type in ('Adam', 'AdamW'):
        optim = torch.optim.AdamW if settings.type == 'AdamW' else torch.optim.Adam
        return optim(
            params,
            lr=settings.lr,
            betas=tuple(settings.betas),
            eps=settings.eps,
            weight_decay=settings.weight_decay,
        )
    raise ConfigError(f'unsupported optimizer {settings.type!r} (SGD, Adam, AdamW)')


class LrSchedule:
    """Learning rate per iteration (mmcv's ``LrUpdaterHook`` family, step/cosine/fixed + warmup).

    Args:
        cfg: the typed ``lr_config`` (or its dict; ``None``: a fixed rate).
        base_lr: ``optimizer.lr``.
        max_epochs, iters_per_epoch: the run's length.
    """

    def __init__(
        self,
        cfg: LrSettings | Mapping | None,
        base_lr: float,
        max_epochs: int,
        iters_per_epoch: int,
    ):
        cfg = parse_settings(LrSettings, cfg, 'lr_config')
        self.policy = cfg.policy.lower()
        if self.policy not in ('step', 'cosineannealing', 'fixed'):
            raise ConfigError(
                f'unsupported lr_config.policy {cfg.policy!r} (step, CosineAnnealing, fixed)'
            )
        self.base_lr = base_lr
        self.max_epochs = max_epochs
        self.iters_per_epoch = max(iters_per_epoch, 1)
        # mmcv: an int decays every `step` epochs, a list at each listed epoch
        self.step_every = cfg.step if isinstance(cfg.step, int) else None
        self.steps = [] if isinstance(cfg.step, int) else list(cfg.step)
        self.gamma = cfg.gamma
        self.by_epoch = cfg.by_epoch
        self.min_lr = cfg.min_lr if cfg.min_lr is not None else base_lr * cfg.min_lr_ratio
        self.warmup = cfg.warmup
        self.warmup_iters = cfg.warmup_iters if self.warmup else 0
        self.warmup_ratio = cfg.warmup_ratio

    def regular_lr(self, epoch: int, it: int) -> float:
        if self.policy == 'step':
            if self.step_every:
                return self.base_lr * self.gamma ** (epoch // self.step_every)
            return self.base_lr * self.gamma ** sum(epoch >= s for s in self.steps)
        if self.policy == 'cosineannealing':
            if self.by_epoch:
                progress, total = epoch, self.max_epochs
            else:
                progress, total = it, self.max_epochs * self.iters_per_epoch
            factor = 0.5 * (1 + math.cos(math.pi * progress / total))
            return self.min_lr + (self.base_lr - self.min_lr) * factor
        return self.base_lr

    def __call__(self, epoch: int, it: int) -> float:
        """The learning rate of global iteration ``it`` (0-based) in ``epoch`` (0-based)."""
        lr = self.regular_lr(epoch, it)
        if it >= self.warmup_iters:
            return lr
        if self.warmup == 'constant':
            return lr * self.warmup_ratio
        if self.warmup == 'linear':
            k = (1 - it / self.warmup_iters) * (1 - self.warmup_ratio)
            return lr * (1 - k)
        if self.warmup == 'exp':
            return lr * self.warmup_ratio ** (1 - it / self.warmup_iters)
        raise ConfigError(f'unsupported warmup {self.warmup!r} (linear, constant, exp)')
