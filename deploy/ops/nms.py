"""Non-maximum suppression in pure PyTorch: the eager reference of every exported NMS.

Semantics follow ONNX ``NonMaxSuppression`` and MMCV's ``nms``: boxes are ``x1, y1, x2, y2``
without the legacy +1, a box is suppressed when its IoU with a kept box is *strictly greater*
than the threshold, and equal scores keep the lower index first (a stable sort).
"""

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """Areas of ``[..., 4]`` boxes; degenerate boxes have area 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of ``[N, 4]`` and ``[M, 4]`` boxes -> ``[N, M]`` (0 for an empty union)."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_keep: int = -1) -> Tensor:
    """Greedy NMS of one class.

    Args:
        boxes: ``[N, 4]`` float boxes.
        scores: ``[N]`` scores.
        iou_threshold: suppress boxes whose IoU with a kept box is strictly greater than this.
        max_keep: stop after this many kept boxes (``<= 0``: keep all).

    Returns:
        ``[K]`` int64 indices into ``boxes``, by decreasing score (ties: lower index first).
    """
    if boxes.numel() == 0:
        return boxes.new_zeros(0, dtype=torch.long)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order].float()
    # Rows of the IoU matrix are computed in chunks so memory stays bounded for large N.
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    chunk = 1024
    for start in range(0, len(order), chunk):
        block_iou = box_iou(sorted_boxes[start : start + chunk], sorted_boxes) > iou_threshold
        for row in range(block_iou.shape[0]):
            i = start + row
            if suppressed[i]:
                continue
            keep.append(i)
            if 0 < max_keep <= len(keep):
                return order[torch.tensor(keep, dtype=torch.long)]
            later = block_iou[row].clone()
            later[: i + 1] = False
            suppressed |= later
    return order[torch.tensor(keep, dtype=torch.long)]


def batched_nms(boxes: Tensor, scores: Tensor, class_ids: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes of different classes never suppress each other.

    Runs :func:`nms` per class (exact, unlike the coordinate-offset trick, whose float rounding can
    flip decisions at the threshold).

    Args:
        boxes: ``[N, 4]``; scores: ``[N]``; class_ids: ``[N]`` int.

    Returns:
        ``[K]`` int64 indices, by decreasing score (ties: lower index first).
    """
    if boxes.numel() == 0:
        return boxes.new_zeros(0, dtype=torch.long)
    keep = [
        idx[nms(boxes[idx], scores[idx], iou_threshold)]
        for idx in (torch.nonzero(class_ids == c).flatten() for c in torch.unique(class_ids))
    ]
    keep = torch.cat(keep)
    # Sort by score, then index: the order a single stable sort over all boxes would give.
    keep = keep.sort().values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]
