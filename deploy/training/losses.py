"""Losses of MMDetection's detectors (``FocalLoss``, ``CrossEntropyLoss``, ``L1Loss``,
``SmoothL1Loss``), with its ``weight`` / ``avg_factor`` reduction.

Every loss is elementwise, multiplied by ``weight`` and reduced as MMDetection's
``weight_reduce_loss``: with ``avg_factor`` the sum is divided by it (``'mean'``), otherwise the
plain mean or sum is taken. The result is multiplied by ``loss_weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError


def weight_reduce_loss(
    loss: Tensor,
    weight: Tensor | None = None,
    reduction: str = 'mean',
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """``loss * weight``, then ``sum / avg_factor`` (``'mean'`` with avg_factor), mean or sum."""
    if weight is not None:
        loss = loss * weight
    if reduction == 'none':
        return loss
    if avg_factor is None:
        return loss.mean() if reduction == 'mean' else loss.sum()
    if reduction != 'mean':
        raise ValueError('avg_factor can only be used with reduction="mean"')
    # MMDetection adds eps so an avg_factor of 0 cannot produce NaN.
    return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)


def sigmoid_focal_loss(
    pred: Tensor, target: Tensor, gamma: float = 2.0, alpha: float = 0.25
) -> Tensor:
    """Elementwise focal loss (Lin et al., 2017) on logits.

    Args:
        pred: ``[N, C]`` logits.
        target: ``[N, C]`` one-hot (float) targets; background rows are all zero.

    Returns:
        ``[N, C]``: ``-alpha_t (1 - p_t)**gamma log(p_t)``, with ``p_t = p`` for targets 1 and
        ``1 - p`` for targets 0, ``alpha_t = alpha`` resp. ``1 - alpha``.
    """
    prob = pred.sigmoid()
    target = target.type_as(pred)
    one_minus_pt = (1 - prob) * target + prob * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * one_minus_pt.pow(gamma)
    return F.binary_cross_entropy_with_logits(pred, target, reduction='none') * focal_weight


def _one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """``[N]`` labels in ``[0, num_classes]`` -> ``[N, num_classes]`` (``num_classes``: all 0)."""
    return F.one_hot(labels.long(), num_classes + 1)[:, :num_classes]


def _broadcast_weight(weight: Tensor | None, pred: Tensor) -> Tensor | None:
    """Per-sample ``[N]`` weights against ``[N, C]`` elementwise losses."""
    if weight is not None and weight.dim() == 1 and pred.dim() == 2:
        return weight[:, None].float()
    return weight


class FocalLoss:
    """Sigmoid focal loss on class labels (background = ``C``), MMDetection's ``FocalLoss``."""

    def __init__(
        self,
        use_sigmoid: bool = True,
        gamma: float = 2.0,
        alpha: float = 0.25,
        reduction: str = 'mean',
        loss_weight: float = 1.0,
        activated: bool = False,
    ):
        if not use_sigmoid or activated:
            raise ConfigError('FocalLoss: only use_sigmoid=True on logits is supported')
        self.gamma, self.alpha = gamma, alpha
        self.reduction, self.loss_weight = reduction, loss_weight

    def __call__(
        self, pred: Tensor, labels: Tensor, weight: Tensor | None = None, avg_factor=None
    ) -> Tensor:
        """``pred [N, C]`` logits, ``labels [N]`` in ``[0, C]``, ``weight [N]`` or ``[N, C]``."""
        loss = sigmoid_focal_loss(pred, _one_hot(labels, pred.shape[1]), self.gamma, self.alpha)
        weight = _broadcast_weight(weight, pred)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


class CrossEntropyLoss:
    """MMDetection's ``CrossEntropyLoss``: softmax over ``C + 1`` classes (background last),
    per-class sigmoid (``use_sigmoid``: labels one-hot, background all 0), or per-pixel sigmoid
    of each RoI's class map (``use_mask``)."""

    def __init__(
        self,
        use_sigmoid: bool = False,
        use_mask: bool = False,
        reduction: str = 'mean',
        class_weight=None,
        loss_weight: float = 1.0,
        ignore_index: int | None = None,
        avg_non_ignore: bool = False,
    ):
        if use_sigmoid and use_mask:
            raise ConfigError('CrossEntropyLoss: use_sigmoid and use_mask are exclusive')
        if class_weight is not None:
            raise ConfigError('CrossEntropyLoss: class_weight is not supported')
        self.use_sigmoid, self.use_mask = use_sigmoid, use_mask
        self.reduction, self.loss_weight = reduction, loss_weight

    def __call__(
        self, pred: Tensor, labels: Tensor, weight: Tensor | None = None, avg_factor=None
    ) -> Tensor:
        """Softmax/sigmoid: ``pred [N, C(+1)]``, ``labels [N]``. Mask: ``pred [N, C, h, w]``
        logits, ``labels`` = the targets ``[N, h, w]`` and ``weight`` = the class of each RoI."""
        if self.use_mask:
            index = torch.arange(pred.shape[0], device=pred.device)
            logits = pred[index, weight.long()] if pred.shape[1] > 1 else pred[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction='mean')
            return self.loss_weight * loss
        if self.use_sigmoid:
            loss = F.binary_cross_entropy_with_logits(
                pred, _one_hot(labels, pred.shape[1]).float(), reduction='none'
            )
            weight = _broadcast_weight(weight, pred)
        else:
            loss = F.cross_entropy(pred, labels.long(), reduction='none')
        weight = weight.float() if weight is not None else None
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


class L1Loss:
    """``|pred - target|``, MMDetection's ``L1Loss``."""

    def __init__(self, reduction: str = 'mean', loss_weight: float = 1.0):
        self.reduction, self.loss_weight = reduction, loss_weight

    def __call__(
        self, pred: Tensor, target: Tensor, weight: Tensor | None = None, avg_factor=None
    ) -> Tensor:
        if target.numel() == 0:
            return pred.sum() * 0  # keeps the graph connected when there are no positives
        loss = (pred - target).abs()
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


class SmoothL1Loss:
    """Huber-style loss: ``0.5 d**2 / beta`` below ``beta``, ``d - 0.5 beta`` above."""

    def __init__(self, beta: float = 1.0, reduction: str = 'mean', loss_weight: float = 1.0):
        self.beta, self.reduction, self.loss_weight = beta, reduction, loss_weight

    def __call__(
        self, pred: Tensor, target: Tensor, weight: Tensor | None = None, avg_factor=None
    ) -> Tensor:
        if target.numel() == 0:
            return pred.sum() * 0
        diff = (pred - target).abs()
        loss = torch.where(diff < self.beta, 0.5 * diff * diff / self.beta, diff - 0.5 * self.beta)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


LOSSES = {
    'FocalLoss': FocalLoss,
    'CrossEntropyLoss': CrossEntropyLoss,
    'L1Loss': L1Loss,
    'SmoothL1Loss': SmoothL1Loss,
}


def build_loss(cfg: dict):
    """A loss callable from its MMDetection config dict (``type`` one of :data:`LOSSES`)."""
    cfg = dict(cfg)
    kind = cfg.pop('type')
    kind = kind.rsplit('.', 1)[-1]  # 'mmdet.FocalLoss' (3.x) -> 'FocalLoss'
    if kind not in LOSSES:
        raise ConfigError(f'unsupported loss {kind!r} (supported: {", ".join(LOSSES)})')
    return LOSSES[kind](**cfg)
