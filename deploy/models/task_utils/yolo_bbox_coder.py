"""MMDetection's ``YOLOBBoxCoder``: YOLOv3 centre offsets in cells and log-scale sizes."""

import torch
from torch import Tensor

from ...registry import MODELS


@MODELS.register_module()
class YOLOBBoxCoder:
    """``(x, y)``: sigmoid offsets of the box centre within its cell; ``(w, h)``: log of the box
    size relative to its anchor. Decoded boxes are never clipped (as in MMDetection).

    Args:
        eps: keeps the encoded centre offsets inside ``(0, 1)``.
    """

    def __init__(self, eps: float = 1e-6):
        self.eps = eps

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor, stride) -> Tensor:
        """Targets ``[..., 4]`` of ``gt_bboxes`` for anchors ``bboxes`` with cell ``stride``."""
        gt_xy = (gt_bboxes[..., :2] + gt_bboxes[..., 2:]) * 0.5
        gt_wh = gt_bboxes[..., 2:] - gt_bboxes[..., :2]
        xy = (bboxes[..., :2] + bboxes[..., 2:]) * 0.5
        wh = bboxes[..., 2:] - bboxes[..., :2]
        wh_target = torch.log((gt_wh / wh).clamp(min=self.eps))
        xy_target = ((gt_xy - xy) / stride + 0.5).clamp(self.eps, 1 - self.eps)
        return torch.cat([xy_target, wh_target], dim=-1)

    def decode(self, bboxes: Tensor, pred_bboxes: Tensor, stride) -> Tensor:
        """Boxes ``[..., 4]`` from anchors ``bboxes [..., 4]``, predictions ``pred_bboxes
        [..., 4]`` (x, y already through a sigmoid; broadcastable) and ``stride`` (a number or a
        tensor broadcastable to ``[..., 1]``, the anchor's level stride)."""
        xy_centers = (bboxes[..., :2] + bboxes[..., 2:]) * 0.5 + (
            pred_bboxes[..., :2] - 0.5
        ) * stride
        half_wh = (bboxes[..., 2:] - bboxes[..., :2]) * 0.5 * pred_bboxes[..., 2:].exp()
        return torch.cat([xy_centers - half_wh, xy_centers + half_wh], dim=-1)
