"""The losses RTMDet trains with: ``QualityFocalLoss`` (Li et al., 2020, Generalized Focal Loss)
on the class logits and ``GIoULoss`` (Rezatofighi et al., 2019) on decoded boxes.

Both reduce as :func:`deploy.training.losses.weight_reduce_loss` (MMDetection's ``weight`` /
``avg_factor`` semantics) and multiply by ``loss_weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .losses import weight_reduce_loss


def quality_focal_loss(pred: Tensor, labels: Tensor, scores: Tensor, beta: float = 2.0) -> Tensor:
    """Per-sample quality focal loss on logits.

    Args:
        pred: ``[N, C]`` logits.
        labels: ``[N]`` in ``[0, C]`` (``C``: background).
        scores: ``[N]`` soft targets of the positives (RTMDet: the IoU of the assigned box).

    Returns:
        ``[N]``: the sum over classes of ``BCE(p, t) * |t - p|**beta``, with ``t = 0`` for every
        class except a positive's own, where ``t`` is its score.
    """
    prob = pred.sigmoid()
    target = torch.zeros_like(pred)
    pos = torch.nonzero((labels >= 0) & (labels < pred.shape[1])).flatten()
    target[pos, labels[pos].long()] = scores[pos].to(pred.dtype)
    # |t - p| is p where t = 0: the background term of the focal loss with gamma = beta.
    modulator = (target - prob).abs().pow(beta)
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction='none') * modulator
    return loss.sum(dim=1)


class QualityFocalLoss:
    """MMDetection's ``QualityFocalLoss`` (sigmoid, logits in); targets ``(labels, scores)``."""

    def __init__(
        self,
        use_sigmoid: bool = True,
        beta: float = 2.0,
        reduction: str = 'mean',
        loss_weight: float = 1.0,
        activated: bool = False,
    ):
        if not use_sigmoid or activated:
            raise ConfigError('QualityFocalLoss: only use_sigmoid=True on logits is supported')
        self.beta, self.reduction, self.loss_weight = beta, reduction, loss_weight

    def __call__(
        self,
        pred: Tensor,
        target: tuple[Tensor, Tensor],
        weight: Tensor | None = None,
        avg_factor=None,
    ) -> Tensor:
        labels, scores = target
        loss = quality_focal_loss(pred, labels, scores, self.beta)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


def generalized_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Aligned GIoU of ``[N, 4]`` ``x1, y1, x2, y2`` boxes: IoU minus the share of the smallest
    enclosing box that neither covers; in ``[-1, 1]``."""
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    overlap = (rb - lt).clamp(min=0).prod(dim=1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(dim=1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(dim=1)
    union = (area1 + area2 - overlap).clamp(min=eps)
    enclose_wh = (
        torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])
    ).clamp(min=0)
    enclose = enclose_wh.prod(dim=1).clamp(min=eps)
    return overlap / union - (enclose - union) / enclose


class GIoULoss:
    """``1 - GIoU`` of predicted and target boxes, MMDetection's ``GIoULoss``."""

    def __init__(self, eps: float = 1e-6, reduction: str = 'mean', loss_weight: float = 1.0):
        self.eps, self.reduction, self.loss_weight = eps, reduction, loss_weight

    def __call__(
        self, pred: Tensor, target: Tensor, weight: Tensor | None = None, avg_factor=None
    ) -> Tensor:
        if target.numel() == 0:
            return pred.sum() * 0  # keeps the graph connected when there are no positives
        loss = 1 - generalized_iou(pred, target, self.eps)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


RTMDET_LOSSES = {'QualityFocalLoss': QualityFocalLoss, 'GIoULoss': GIoULoss}


def build_rtmdet_loss(cfg: dict):
    """``QualityFocalLoss`` or ``GIoULoss`` from its MMDetection config dict."""
    cfg = dict(cfg)
    kind = str(cfg.pop('type')).rsplit('.', 1)[-1]
    if kind not in RTMDET_LOSSES:
        raise ConfigError(
            f'RTMDet training: unsupported loss {kind!r} (supported: {", ".join(RTMDET_LOSSES)})'
        )
    return RTMDET_LOSSES[kind](**cfg)
