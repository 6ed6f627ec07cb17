"""Training targets: anchors -> (labels, box deltas) for dense heads, sampled RoIs -> (labels,
class deltas, masks) for R-CNN heads, with MMDetection's assign -> sample -> encode steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..ops.roi_align import roi_align_eager
from .assigners import MaxIoUAssigner
from .samplers import PseudoSampler, RandomSampler, SamplingResult


def anchor_valid_flags(
    prior_generator, featmap_sizes: list, pad_shape: tuple[int, int], device
) -> list[Tensor]:
    """Per level, ``[H * W * A]`` bool: the anchor's location lies inside this image's own
    padded size (``pad_shape``), not only inside the batch's padding (MMDetection's
    ``valid_flags``)."""
    flags = []
    pad_h, pad_w = pad_shape[:2]
    for level, (feat_h, feat_w) in enumerate(featmap_sizes):
        stride_w, stride_h = prior_generator.strides[level]
        valid_h = min(int(math.ceil(pad_h / stride_h)), int(feat_h))
        valid_w = min(int(math.ceil(pad_w / stride_w)), int(feat_w))
        valid_y = torch.arange(int(feat_h), device=device) < valid_h
        valid_x = torch.arange(int(feat_w), device=device) < valid_w
        valid = (valid_y[:, None] & valid_x[None, :]).reshape(-1)
        num_base = prior_generator.num_base_priors[level]
        flags.append(valid[:, None].expand(-1, num_base).reshape(-1))
    return flags


def inside_flags(
    anchors: Tensor, valid: Tensor, img_shape: tuple, allowed_border: float = -1
) -> Tensor:
    """Valid anchors, and with ``allowed_border >= 0`` only those within the image plus that
    border (``-1``, RetinaNet's and RPN's setting: every valid anchor)."""
    if allowed_border < 0:
        return valid
    h, w = img_shape[:2]
    return (
        valid
        & (anchors[:, 0] >= -allowed_border)
        & (anchors[:, 1] >= -allowed_border)
        & (anchors[:, 2] < w + allowed_border)
        & (anchors[:, 3] < h + allowed_border)
    )


@dataclass
class DenseTargets:
    """Targets of all anchors of a batch, concatenated over levels in the head's
    (level, y, x, anchor) order.

    Attributes:
        labels: ``[B, N]`` class per anchor (``num_classes`` = background).
        label_weights: ``[B, N]`` 1 where the anchor takes part in the class loss.
        bbox_targets: ``[B, N, 4]`` encoded deltas (positives only).
        bbox_weights: ``[B, N, 4]`` 1 for positives.
        num_total_pos, num_total_neg: summed over images; each image counts at least one
            positive, as in MMDetection (``avg_factor`` never 0).
    """

    labels: Tensor
    label_weights: Tensor
    bbox_targets: Tensor
    bbox_weights: Tensor
    num_total_pos: int
    num_total_neg: int


def dense_head_targets(
    anchors: Tensor,
    valid_flags: list[Tensor],
    gt_bboxes: list[Tensor],
    gt_labels: list[Tensor] | None,
    img_metas: list[dict],
    *,
    assigner: MaxIoUAssigner,
    sampler: PseudoSampler | RandomSampler,
    bbox_coder,
    num_classes: int,
    allowed_border: float = -1,
    pos_weight: float = -1,
    gt_bboxes_ignore: list[Tensor] | None = None,
) -> DenseTargets:
    """MMDetection's ``AnchorHead.get_targets`` for a batch.

    Args:
        anchors: ``[N, 4]`` anchors of all levels (the same for every image).
        valid_flags: per image ``[N]`` (see :func:`anchor_valid_flags`).
        gt_bboxes: per image ``[G_i, 4]`` in network-input pixels.
        gt_labels: per image ``[G_i]``; ``None`` for RPN (every gt is class 0).
        img_metas: ``img_shape`` is read (for ``allowed_border >= 0``).
        pos_weight: class-loss weight of positives (``<= 0``: 1).
    """
    labels, label_weights, bbox_targets, bbox_weights = [], [], [], []
    num_pos = num_neg = 0
    for i, meta in enumerate(img_metas):
        inside = inside_flags(anchors, valid_flags[i], meta['img_shape'], allowed_border)
        inside_anchors = anchors[inside]
        img_gt_labels = None if gt_labels is None else gt_labels[i]
        ignore = None if gt_bboxes_ignore is None else gt_bboxes_ignore[i]
        assign = assigner.assign(inside_anchors, gt_bboxes[i], ignore, img_gt_labels)
        sampled = sampler.sample(assign, inside_anchors, gt_bboxes[i], img_gt_labels)

        n = len(inside_anchors)
        img_labels = anchors.new_full((n,), num_classes, dtype=torch.long)
        img_label_weights = anchors.new_zeros(n)
        img_targets = anchors.new_zeros(n, 4)
        img_bbox_weights = anchors.new_zeros(n, 4)
        pos, neg = sampled.pos_inds, sampled.neg_inds
        if len(pos) > 0:
            img_targets[pos] = bbox_coder.encode(sampled.pos_bboxes, sampled.pos_gt_bboxes)
            img_bbox_weights[pos] = 1.0
            img_labels[pos] = 0 if img_gt_labels is None else img_gt_labels[sampled.pos_gt_inds]
            img_label_weights[pos] = 1.0 if pos_weight <= 0 else pos_weight
        if len(neg) > 0:
            img_label_weights[neg] = 1.0

        # back to all anchors: outside ones are background with weight 0
        full_labels = anchors.new_full((len(anchors),), num_classes, dtype=torch.long)
        full_labels[inside] = img_labels
        full_label_weights = anchors.new_zeros(len(anchors))
        full_label_weights[inside] = img_label_weights
        full_targets = anchors.new_zeros(len(anchors), 4)
        full_targets[inside] = img_targets
        full_bbox_weights = anchors.new_zeros(len(anchors), 4)
        full_bbox_weights[inside] = img_bbox_weights

        labels.append(full_labels)
        label_weights.append(full_label_weights)
        bbox_targets.append(full_targets)
        bbox_weights.append(full_bbox_weights)
        num_pos += max(len(pos), 1)
        num_neg += max(len(neg), 1)
    return DenseTargets(
        torch.stack(labels),
        torch.stack(label_weights),
        torch.stack(bbox_targets),
        torch.stack(bbox_weights),
        num_pos,
        num_neg,
    )


@dataclass
class RoITargets:
    """Targets of the sampled RoIs of a batch (concatenated over images).

    Attributes:
        labels: ``[K]`` class per RoI (``num_classes`` = background).
        label_weights: ``[K]``.
        bbox_targets: ``[K, 4]`` deltas w.r.t. the RoI (positives only).
        bbox_weights: ``[K, 4]`` 1 for positives.
    """

    labels: Tensor
    label_weights: Tensor
    bbox_targets: Tensor
    bbox_weights: Tensor


def sample_rois(
    proposals: list[Tensor],
    gt_bboxes: list[Tensor],
    gt_labels: list[Tensor],
    *,
    assigner: MaxIoUAssigner,
    sampler: RandomSampler,
    gt_bboxes_ignore: list[Tensor] | None = None,
) -> list[SamplingResult]:
    """Assign and sample each image's proposals ``[n_i, 4+]`` (R-CNN)."""
    results = []
    for i, props in enumerate(proposals):
        props = props[:, :4].detach()
        ignore = None if gt_bboxes_ignore is None else gt_bboxes_ignore[i]
        assign = assigner.assign(props, gt_bboxes[i], ignore, gt_labels[i])
        results.append(sampler.sample(assign, props, gt_bboxes[i], gt_labels[i]))
    return results


def roi_targets(
    sampling_results: list[SamplingResult], bbox_coder, num_classes: int, pos_weight: float = -1
) -> RoITargets:
    """MMDetection's ``BBoxHead.get_targets``: per image, positives first, then negatives (the
    order of :func:`sampled_rois`)."""
    labels, label_weights, bbox_targets, bbox_weights = [], [], [], []
    for res in sampling_results:
        num_pos, num_neg = len(res.pos_inds), len(res.neg_inds)
        ref = res.bboxes
        img_labels = ref.new_full((num_pos + num_neg,), num_classes, dtype=torch.long)
        img_label_weights = ref.new_zeros(num_pos + num_neg)
        img_targets = ref.new_zeros(num_pos + num_neg, 4)
        img_bbox_weights = ref.new_zeros(num_pos + num_neg, 4)
        if num_pos > 0:
            img_labels[:num_pos] = res.pos_gt_labels
            img_label_weights[:num_pos] = 1.0 if pos_weight <= 0 else pos_weight
            img_targets[:num_pos] = bbox_coder.encode(res.pos_bboxes, res.pos_gt_bboxes)
            img_bbox_weights[:num_pos] = 1.0
        if num_neg > 0:
            img_label_weights[num_pos:] = 1.0
        labels.append(img_labels)
        label_weights.append(img_label_weights)
        bbox_targets.append(img_targets)
        bbox_weights.append(img_bbox_weights)
    return RoITargets(
        torch.cat(labels),
        torch.cat(label_weights),
        torch.cat(bbox_targets),
        torch.cat(bbox_weights),
    )


def sampled_rois(sampling_results: list[SamplingResult], positives_only: bool = False) -> Tensor:
    """``[K, 5]`` RoIs ``(batch_index, x1, y1, x2, y2)``: per image positives then negatives."""
    rois = []
    for i, res in enumerate(sampling_results):
        boxes = res.pos_bboxes if positives_only else torch.cat([res.pos_bboxes, res.neg_bboxes])
        rois.append(torch.cat([boxes.new_full((len(boxes), 1), i), boxes], 1))
    return torch.cat(rois)


def mask_targets(
    sampling_results: list[SamplingResult], gt_masks: list[Tensor], mask_size: tuple[int, int]
) -> Tensor:
    """MMDetection's ``mask_target``: each positive RoI's gt mask, cropped by the RoI and resized
    to ``mask_size`` with RoIAlign (aligned, adaptive sampling), then
    binarised at 0.5.

    Args:
        gt_masks: per image ``[G_i, H, W]`` binary masks in network-input pixels.

    Returns:
        ``[P, mask_h, mask_w]`` float 0/1, positives of all images in order.
    """
    targets = []
    for res, masks in zip(sampling_results, gt_masks):
        if len(res.pos_inds) == 0:
            continue
        boxes = res.pos_bboxes
        rois = torch.cat([res.pos_gt_inds.to(boxes.dtype)[:, None], boxes], 1)
        crops = roi_align_eager(masks[:, None].float(), rois, tuple(mask_size), 1.0, 0, True)
        targets.append((crops[:, 0] >= 0.5).float())
    if not targets:
        return torch.zeros(0, *mask_size)
    return torch.cat(targets)
