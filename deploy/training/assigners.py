"""Box overlaps and MMDetection's ``MaxIoUAssigner`` (2.x/3.x semantics), for training only.

An assignment gives every candidate box (anchor or proposal) one of:

* ``-1``: ignored (neither positive nor negative; no loss);
* ``0``: negative (background);
* ``i + 1``: positive, matched to ground-truth box ``i``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from .settings import AssignerSettings


def bbox_overlaps(boxes1: Tensor, boxes2: Tensor, mode: str = 'iou', eps: float = 1e-6) -> Tensor:
    """Pairwise overlaps of ``x1, y1, x2, y2`` boxes (no ``+1`` in widths, as MMDetection 2.x+).

    Args:
        boxes1: ``[M, 4]``; boxes2: ``[N, 4]``.
        mode: ``'iou'`` (intersection over union) or ``'iof'`` (intersection over the area of
            ``boxes1``, "intersection over foreground").
        eps: lower bound of the denominator.

    Returns:
        ``[M, N]`` overlaps.
    """
    if mode not in ('iou', 'iof'):
        raise ValueError(f"mode must be 'iou' or 'iof', got {mode!r}")
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    if mode == 'iou':
        union = area1[:, None] + area2[None, :] - overlap
    else:
        union = area1[:, None].expand_as(overlap)
    return overlap / union.clamp(min=eps)


@dataclass
class AssignResult:
    """What an assigner decided for ``N`` candidate boxes.

    Attributes:
        num_gts: number of ground-truth boxes.
        gt_inds: ``[N]`` int64: ``-1`` ignored, ``0`` negative, ``i + 1`` matched to gt ``i``.
        max_overlaps: ``[N]`` best IoU of each candidate with any gt.
        labels: ``[N]`` int64 class of the matched gt, ``-1`` where not positive.
    """

    num_gts: int
    gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor

    def add_gt_(self, gt_labels: Tensor) -> None:
        """Prepend the gt boxes themselves as positives (R-CNN's ``add_gt_as_proposals``)."""
        self_inds = torch.arange(1, len(gt_labels) + 1, device=self.gt_inds.device)
        self.gt_inds = torch.cat([self_inds, self.gt_inds])
        self.max_overlaps = torch.cat(
            [self.max_overlaps.new_ones(len(gt_labels)), self.max_overlaps]
        )
        self.labels = torch.cat([gt_labels.to(self.labels.dtype), self.labels])


class MaxIoUAssigner:
    """Assign each candidate to the gt it overlaps most (MMDetection's ``MaxIoUAssigner``).

    Steps, with ``overlaps [G, N]`` the IoU of every gt with every candidate:

    1. ignore: with ``ignore_iof_thr > 0``, candidates covered more than that by an ignore box
       (IoF) get overlap ``-1`` with every gt, so they end up ignored;
    2. every candidate starts ignored (``-1``); those whose best IoU is in ``[0, neg_iou_thr)``
       (or in the ``(lo, hi)`` range when a tuple is given) become negative;
    3. those whose best IoU is ``>= pos_iou_thr`` become positive for their best gt;
    4. low-quality matches (``match_low_quality``): for each gt whose best IoU is
       ``>= min_pos_iou``, the candidates with exactly that IoU (all of them when
       ``gt_max_assign_all``, else the first) are assigned to that gt, even overriding step 3,
       so that every gt gets at least one positive.

    Args:
        pos_iou_thr, neg_iou_thr, min_pos_iou: the thresholds above.
        gt_max_assign_all: step 4 assigns all candidates tied at a gt's best IoU.
        ignore_iof_thr: IoF threshold for ignore boxes (``<= 0``: ignore boxes are not used).
        ignore_wrt_candidates: IoF over the candidate's area (True) or the ignore box's area.
        match_low_quality: run step 4.
    """

    def __init__(
        self,
        pos_iou_thr: float,
        neg_iou_thr: float | tuple[float, float],
        min_pos_iou: float = 0.0,
        gt_max_assign_all: bool = True,
        ignore_iof_thr: float = -1,
        ignore_wrt_candidates: bool = True,
        match_low_quality: bool = True,
        gpu_assign_thr: int = -1,
        iou_calculator: dict | None = None,
    ):
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates
        self.match_low_quality = match_low_quality

    def assign(
        self,
        bboxes: Tensor,
        gt_bboxes: Tensor,
        gt_bboxes_ignore: Tensor | None = None,
        gt_labels: Tensor | None = None,
    ) -> AssignResult:
        """Assign ``bboxes [N, 4+]`` to ``gt_bboxes [G, 4]`` (``gt_labels [G]`` optional)."""
        bboxes = bboxes[:, :4]
        overlaps = bbox_overlaps(gt_bboxes, bboxes)
        if (
            self.ignore_iof_thr > 0
            and gt_bboxes_ignore is not None
            and gt_bboxes_ignore.numel() > 0
            and bboxes.numel() > 0
        ):
            if self.ignore_wrt_candidates:
                ignore_max = bbox_overlaps(bboxes, gt_bboxes_ignore, mode='iof').max(dim=1).values
            else:
                ignore_max = bbox_overlaps(gt_bboxes_ignore, bboxes, mode='iof').max(dim=0).values
            overlaps[:, ignore_max > self.ignore_iof_thr] = -1
        return self.assign_wrt_overlaps(overlaps, gt_labels)

    def assign_wrt_overlaps(
        self, overlaps: Tensor, gt_labels: Tensor | None = None
    ) -> AssignResult:
        """Steps 2-4 on ``overlaps [G, N]``."""
        num_gts, num_bboxes = overlaps.shape
        device = overlaps.device
        gt_inds = torch.full((num_bboxes,), -1, dtype=torch.long, device=device)
        labels = torch.full((num_bboxes,), -1, dtype=torch.long, device=device)
        if num_gts == 0 or num_bboxes == 0:
            max_overlaps = overlaps.new_zeros(num_bboxes)
            if num_gts == 0:
                gt_inds[:] = 0  # no gt: everything is background
            return AssignResult(num_gts, gt_inds, max_overlaps, labels)

        max_overlaps, argmax_overlaps = overlaps.max(dim=0)
        gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)

        if isinstance(self.neg_iou_thr, (int, float)):
            negative = (max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)
        else:
            low, high = self.neg_iou_thr
            negative = (max_overlaps >= low) & (max_overlaps < high)
        gt_inds[negative] = 0

        positive = max_overlaps >= self.pos_iou_thr
        gt_inds[positive] = argmax_overlaps[positive] + 1

        if self.match_low_quality:
            # A loop over gts, as in MMDetection: later gts win ties between gts.
            for i in range(num_gts):
                if gt_max_overlaps[i] >= self.min_pos_iou:
                    if self.gt_max_assign_all:
                        gt_inds[overlaps[i] == gt_max_overlaps[i]] = i + 1
                    else:
                        gt_inds[gt_argmax_overlaps[i]] = i + 1

        if gt_labels is not None:
            matched = gt_inds > 0
            labels[matched] = gt_labels[gt_inds[matched] - 1].long()
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)


ASSIGNERS = {'MaxIoUAssigner': MaxIoUAssigner}


def build_assigner(cfg: AssignerSettings | dict) -> MaxIoUAssigner:
    """An assigner from its typed settings, or its config dict (``type`` one of
    :data:`ASSIGNERS`)."""
    if isinstance(cfg, AssignerSettings):
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        return ASSIGNERS[values.pop('type')](**values)
    cfg = dict(cfg)
    kind = cfg.pop('type')
    if kind not in ASSIGNERS:
        raise ConfigError(f'unsupported assigner {kind!r} (supported: {", ".join(ASSIGNERS)})')
    return ASSIGNERS[kind](**cfg)
