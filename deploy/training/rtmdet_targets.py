"""RTMDet's training targets and losses (MMDetection's ``RTMDetHead.loss_by_feat``).

* :class:`DynamicSoftLabelAssigner` (Lyu et al., 2022): a prior whose point lies inside a gt box
  is a candidate for it; the cost of (prior, gt) is a soft classification cost (BCE against the
  IoU-scaled one-hot label, weighted by ``|label - p|**2``) + ``-log(IoU) * iou_weight`` + a soft
  centre prior ``10**(distance / stride - soft_center_radius)``. Each gt takes its ``k`` cheapest
  priors, ``k`` = the sum of its ``topk`` best IoUs (at least 1); a prior claimed twice goes to
  its cheapest gt.
* Classification: :class:`~.rtmdet_losses.QualityFocalLoss` with the assigned IoU as the target
  score, over all priors, divided by the sum of the positives' IoUs.
* Boxes: :class:`~.rtmdet_losses.GIoULoss` on the decoded boxes of the positives, weighted by
  their IoU and divided by the same sum.

The assignment sees detached predictions, as in MMDetection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..settings import parse_settings
from .assigners import bbox_overlaps
from .rtmdet_losses import build_rtmdet_loss
from .settings import SoftLabelTrainSettings

_EPS = 1e-7
_DEFAULT_CLS = dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0)
_DEFAULT_BBOX = dict(type='GIoULoss', loss_weight=2.0)


@dataclass(frozen=True)
class SoftLabelAssignment:
    """Per prior: ``gt_inds`` (-1: background), ``labels`` (``num_classes``: background) and
    ``ious`` (IoU of the prior's predicted box with its gt; 0 for background)."""

    gt_inds: Tensor
    labels: Tensor
    ious: Tensor


class DynamicSoftLabelAssigner:
    """MMDetection's ``DynamicSoftLabelAssigner`` (see the module docstring)."""

    def __init__(self, soft_center_radius: float = 3.0, topk: int = 13, iou_weight: float = 3.0):
        self.soft_center_radius = soft_center_radius
        self.topk = topk
        self.iou_weight = iou_weight

    def assign(
        self,
        logits: Tensor,
        boxes: Tensor,
        priors: Tensor,
        gt_bboxes: Tensor,
        gt_labels: Tensor,
    ) -> SoftLabelAssignment:
        """Args: ``logits [N, C]``, decoded ``boxes [N, 4]``, ``priors [N, 4]``
        ``(x, y, stride_w, stride_h)``, ``gt_bboxes [G, 4]``, ``gt_labels [G]``."""
        num_priors, num_classes = logits.shape
        assignment = SoftLabelAssignment(
            gt_inds=logits.new_full((num_priors,), -1, dtype=torch.long),
            labels=logits.new_full((num_priors,), num_classes, dtype=torch.long),
            ious=logits.new_zeros(num_priors),
        )
        if len(gt_bboxes) == 0 or num_priors == 0:
            return assignment
        points = priors[:, :2]
        deltas = torch.cat(
            [points[:, None] - gt_bboxes[:, :2], gt_bboxes[:, 2:] - points[:, None]], -1
        )
        valid = (deltas.min(dim=-1).values > 0).any(dim=1)
        if not valid.any():
            return assignment
        cost, ious = self._cost(logits[valid], boxes[valid], priors[valid], gt_bboxes, gt_labels)
        gt_of_valid = self._dynamic_k_matching(cost, ious)
        valid_inds = torch.nonzero(valid).flatten()
        matched = gt_of_valid >= 0
        inds, gts = valid_inds[matched], gt_of_valid[matched]
        assignment.gt_inds[inds] = gts
        assignment.labels[inds] = gt_labels[gts].long()
        assignment.ious[inds] = ious[matched, gts]
        return assignment

    def _cost(
        self, logits: Tensor, boxes: Tensor, priors: Tensor, gt_bboxes: Tensor, gt_labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``[V, G]`` cost and IoU of the candidate priors against every gt."""
        gt_centers = (gt_bboxes[:, :2] + gt_bboxes[:, 2:]) / 2
        distance = (priors[:, None, :2] - gt_centers[None]).pow(2).sum(-1).sqrt() / priors[:, 2:3]
        center_prior = torch.pow(10, distance - self.soft_center_radius)
        ious = bbox_overlaps(boxes, gt_bboxes)
        iou_cost = -torch.log(ious + _EPS) * self.iou_weight
        onehot = F.one_hot(gt_labels.long(), logits.shape[1]).to(logits.dtype)
        soft_label = onehot[None] * ious[..., None]  # [V, G, C]
        pred = logits[:, None].expand_as(soft_label)
        modulator = (soft_label - pred.sigmoid()).abs().pow(2.0)
        cls_cost = F.binary_cross_entropy_with_logits(pred, soft_label, reduction='none')
        cls_cost = (cls_cost * modulator).sum(-1)
        return cls_cost + iou_cost + center_prior, ious

    def _dynamic_k_matching(self, cost: Tensor, ious: Tensor) -> Tensor:
        """Per candidate prior the gt it is matched to, or -1."""
        num_valid, num_gt = cost.shape
        top_ious = torch.topk(ious, min(self.topk, num_valid), dim=0).values
        dynamic_ks = top_ious.sum(0).int().clamp(min=1).tolist()
        matching = torch.zeros_like(cost, dtype=torch.bool)
        for gt, k in enumerate(dynamic_ks):
            matching[torch.topk(cost[:, gt], k, largest=False).indices, gt] = True
        # A prior claimed by several gts keeps only its cheapest one.
        cheapest = cost.argmin(dim=1)
        multiple = matching.sum(1) > 1
        matching[multiple] = False
        matching[multiple, cheapest[multiple]] = True
        return torch.where(matching.any(1), matching.int().argmax(1), -1)


def pad_to_stride(img: Tensor, stride: int) -> Tensor:
    """Zero-pad ``[B, 3, H, W]`` bottom/right to multiples of ``stride``: the training batch is
    padded only to its largest image, and CSPNeXtPAFPN's top-down concatenation needs every
    level to be exactly twice the next."""
    pad_h, pad_w = -img.shape[-2] % stride, -img.shape[-1] % stride
    return F.pad(img, (0, pad_w, 0, pad_h)) if pad_h or pad_w else img


def _flatten(head: nn.Module, outputs: list[Tensor], channels: int) -> Tensor:
    return torch.cat([head.flatten_level(o, channels) for o in outputs], 1)


def rtmdet_head_loss(
    head: nn.Module,
    head_outputs: tuple,
    batch: dict,
    train_cfg: Mapping | SoftLabelTrainSettings,
) -> dict[str, Tensor]:
    """``RTMDetHead.loss_by_feat`` for one batch.

    Args:
        head: an :class:`RTMDetSepBNHead`; ``head_outputs``: ``head(feats)`` (per level
            ``cls_scores [B, C, H, W]`` logits and ``bbox_preds [B, 4, H, W]`` distances in
            pixels).
        batch: ``gt_bboxes``, ``gt_labels`` (see :mod:`deploy.training.data`).
        train_cfg: ``model.train_cfg`` (typed, or the config's dict, parsed here).

    Returns:
        ``dict(loss_cls, loss_bbox)``.
    """
    if not isinstance(train_cfg, SoftLabelTrainSettings):
        train_cfg = parse_settings(SoftLabelTrainSettings, train_cfg, 'model.train_cfg')
    setting = train_cfg.assigner
    assigner = DynamicSoftLabelAssigner(
        setting.soft_center_radius, setting.topk, setting.iou_weight
    )
    cls_scores, bbox_preds = head_outputs[0], head_outputs[1]
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    priors = torch.cat(
        head.prior_generator.grid_priors(sizes, cls_scores[0].dtype, cls_scores[0].device, True)
    )
    logits = _flatten(head, cls_scores, head.num_classes)
    boxes = head.bbox_coder.decode(priors, _flatten(head, bbox_preds, 4))
    assignments = [
        assigner.assign(img_logits.detach(), img_boxes.detach(), priors, gt_boxes, gt_labels)
        for img_logits, img_boxes, gt_boxes, gt_labels in zip(
            logits, boxes, batch['gt_bboxes'], batch['gt_labels']
        )
    ]
    labels = torch.cat([a.labels for a in assignments])
    ious = torch.cat([a.ious for a in assignments])
    gt_inds = [a.gt_inds for a in assignments]
    targets = torch.cat(
        [
            gt[inds.clamp(min=0)] if len(gt) else boxes.new_zeros(len(inds), 4)
            for gt, inds in zip(batch['gt_bboxes'], gt_inds)
        ]
    )
    pos = labels < head.num_classes
    # The sum of the positives' IoUs normalises both losses (at least 1).
    avg_factor = max(float(ious[pos].sum()), 1.0)
    loss_cls = build_rtmdet_loss(getattr(head, 'loss_cls_cfg', None) or _DEFAULT_CLS)
    loss_bbox = build_rtmdet_loss(getattr(head, 'loss_bbox_cfg', None) or _DEFAULT_BBOX)
    flat_logits, flat_boxes = logits.reshape(-1, head.num_classes), boxes.reshape(-1, 4)
    return dict(
        loss_cls=loss_cls(flat_logits, (labels, ious), avg_factor=avg_factor),
        loss_bbox=loss_bbox(flat_boxes[pos], targets[pos], ious[pos], avg_factor=avg_factor),
    )
