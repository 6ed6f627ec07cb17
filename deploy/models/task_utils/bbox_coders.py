"""Box coders with MMDetection 2.x/3.x semantics (no ``+1`` in widths).

Every ``decode`` takes ``max_shape`` as None, an ``(h, w[, c])`` tuple (eager, one image) or a
Tensor ``[B, 2]`` / ``[2]`` of per-image ``(h, w)`` (export: the real image size is a graph
input), and clips x to ``[0, w]`` and y to ``[0, h]`` when ``clip_border`` is set. The tensor path
uses only broadcasting ``torch.maximum``/``torch.minimum``, so it exports with dynamic shapes.
"""

import math

import torch
from torch import Tensor

from ...registry import MODELS


def clip_bboxes(bboxes: Tensor, max_shape) -> Tensor:
    """Clip ``bboxes [..., 4k]`` (``x1, y1, x2, y2`` repeated) to the image.

    Args:
        bboxes: boxes, e.g. ``[N, 4]``, ``[B, N, 4]`` or ``[N, 4 * C]``.
        max_shape: None, ``(h, w[, c])`` or a Tensor ``[2]`` / ``[B, 2]`` of ``(h, w)``; with
            ``[B, 2]`` the boxes' first dim is the batch (a 2-D ``bboxes`` needs ``B == 1``).
    """
    if max_shape is None:
        return bboxes
    pairs = bboxes.unflatten(-1, (-1, 2))  # [..., 2k, (x, y)]
    if isinstance(max_shape, Tensor):
        max_wh = max_shape[..., :2].flip(-1).to(bboxes.dtype)  # (w, h)
        if max_wh.dim() == 2:
            if bboxes.dim() == 2:
                max_wh = max_wh[0]
            else:
                max_wh = max_wh.reshape(max_wh.shape[0], *([1] * (bboxes.dim() - 1)), 2)
        pairs = torch.maximum(pairs, torch.zeros_like(max_wh))
        pairs = torch.minimum(pairs, max_wh)
    else:
        height, width = max_shape[0], max_shape[1]
        pairs = torch.stack([pairs[..., 0].clamp(0, width), pairs[..., 1].clamp(0, height)], -1)
    return pairs.flatten(-2)


def _with_classes(priors: Tensor, preds: Tensor) -> tuple[Tensor, Tensor]:
    """View ``preds [..., 4k]`` as ``[..., k, 4]`` and ``priors [..., 4]`` as ``[..., 1, 4]``."""
    return priors.unsqueeze(-2), preds.unflatten(-1, (-1, 4))


@MODELS.register_module()
class DeltaXYWHBBoxCoder:
    """``(dx, dy, dw, dh)`` deltas of box centre and log size, normalised by means and stds.

    Args:
        target_means, target_stds: delta normalisation.
        clip_border: clip decoded boxes to ``max_shape``.
        add_ctr_clamp: clamp the centre shift ``pw * dx`` to ``+-ctr_clamp`` pixels (and ``dw``,
            ``dh`` only from above).
        ctr_clamp: that bound in pixels.
    """

    def __init__(
        self,
        target_means: tuple = (0.0, 0.0, 0.0, 0.0),
        target_stds: tuple = (1.0, 1.0, 1.0, 1.0),
        clip_border: bool = True,
        add_ctr_clamp: bool = False,
        ctr_clamp: int = 32,
    ):
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.clip_border = clip_border
        self.add_ctr_clamp = add_ctr_clamp
        self.ctr_clamp = ctr_clamp

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Deltas ``[..., 4]`` that turn ``bboxes [..., 4]`` into ``gt_bboxes [..., 4]``."""
        bboxes, gt_bboxes = bboxes.float(), gt_bboxes.float()
        pxy = (bboxes[..., :2] + bboxes[..., 2:]) * 0.5
        pwh = bboxes[..., 2:] - bboxes[..., :2]
        gxy = (gt_bboxes[..., :2] + gt_bboxes[..., 2:]) * 0.5
        gwh = gt_bboxes[..., 2:] - gt_bboxes[..., :2]
        deltas = torch.cat([(gxy - pxy) / pwh, torch.log(gwh / pwh)], dim=-1)
        means = deltas.new_tensor(self.means)
        stds = deltas.new_tensor(self.stds)
        return (deltas - means) / stds

    def decode(
        self, bboxes: Tensor, pred_bboxes: Tensor, max_shape=None, wh_ratio_clip: float = 16 / 1000
    ) -> Tensor:
        """Apply deltas to boxes.

        Args:
            bboxes: priors ``[..., 4]`` (e.g. anchors ``[N, 4]`` or ``[B, N, 4]``).
            pred_bboxes: deltas ``[..., 4k]`` (k = 1, or one box per class), broadcastable
                against ``bboxes`` (``[N, 4]`` priors with ``[B, N, 4]`` deltas).
            max_shape: see :func:`clip_bboxes`.
            wh_ratio_clip: ``dw``/``dh`` are clamped to ``+-|log(wh_ratio_clip)|``.

        Returns:
            ``x1, y1, x2, y2`` boxes with the broadcast shape of the two inputs.
        """
        priors, deltas = _with_classes(bboxes, pred_bboxes)
        deltas = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        dxy, dwh = deltas[..., :2], deltas[..., 2:]
        pxy = (priors[..., :2] + priors[..., 2:]) * 0.5
        pwh = priors[..., 2:] - priors[..., :2]
        dxy_wh = pwh * dxy
        max_ratio = abs(math.log(wh_ratio_clip))
        if self.add_ctr_clamp:
            dxy_wh = dxy_wh.clamp(min=-self.ctr_clamp, max=self.ctr_clamp)
            dwh = dwh.clamp(max=max_ratio)
        else:
            dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
        gxy = pxy + dxy_wh
        gwh = pwh * dwh.exp()
        decoded = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1).flatten(-2)
        return clip_bboxes(decoded, max_shape) if self.clip_border else decoded


@MODELS.register_module()
class DistancePointBBoxCoder:
    """Distances ``(left, top, right, bottom)`` from a point to the box sides (FCOS).

    Args:
        clip_border: clip decoded boxes to ``max_shape``.
    """

    def __init__(self, clip_border: bool = True):
        self.clip_border = clip_border

    def encode(
        self, points: Tensor, gt_bboxes: Tensor, max_dis: float | None = None, eps: float = 0.1
    ) -> Tensor:
        """Distances ``[..., 4]`` from ``points [..., 2+]`` to ``gt_bboxes [..., 4]``; with
        ``max_dis`` clamped to ``[0, max_dis - eps]``."""
        px, py = points[..., 0], points[..., 1]
        dist = torch.stack(
            [
                px - gt_bboxes[..., 0],
                py - gt_bboxes[..., 1],
                gt_bboxes[..., 2] - px,
                gt_bboxes[..., 3] - py,
            ],
            dim=-1,
        )
        if max_dis is not None:
            dist = dist.clamp(min=0, max=max_dis - eps)
        return dist

    def decode(self, points: Tensor, pred_bboxes: Tensor, max_shape=None) -> Tensor:
        """Boxes ``[..., 4]`` from ``points [..., 2+]`` (only x, y are used) and distances
        ``pred_bboxes [..., 4]`` (broadcastable); clipping as in :func:`clip_bboxes`."""
        xy = points[..., :2]
        decoded = torch.cat([xy - pred_bboxes[..., :2], xy + pred_bboxes[..., 2:]], dim=-1)
        return clip_bboxes(decoded, max_shape) if self.clip_border else decoded


@MODELS.register_module()
class TBLRBBoxCoder:
    """Distances ``(top, bottom, left, right)`` from the prior's centre, divided by the prior's
    height (top, bottom) and width (left, right) and by ``normalizer`` (FSAF).

    Args:
        normalizer: the distance divisor.
        clip_border: clip decoded boxes to ``max_shape``.
    """

    def __init__(self, normalizer: float = 4.0, clip_border: bool = True):
        self.normalizer = normalizer
        self.clip_border = clip_border

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Normalised ``(top, bottom, left, right)`` ``[..., 4]`` of ``gt_bboxes`` w.r.t. priors."""
        cx = (bboxes[..., 0] + bboxes[..., 2]) / 2
        cy = (bboxes[..., 1] + bboxes[..., 3]) / 2
        w = bboxes[..., 2] - bboxes[..., 0]
        h = bboxes[..., 3] - bboxes[..., 1]
        loc = torch.stack(
            [
                (cy - gt_bboxes[..., 1]) / h,
                (gt_bboxes[..., 3] - cy) / h,
                (cx - gt_bboxes[..., 0]) / w,
                (gt_bboxes[..., 2] - cx) / w,
            ],
            dim=-1,
        )
        return loc / self.normalizer

    def decode(self, bboxes: Tensor, pred_bboxes: Tensor, max_shape=None) -> Tensor:
        """Boxes ``[..., 4]`` from priors ``bboxes [..., 4]`` and ``pred_bboxes [..., 4]``
        (broadcastable); clipping as in :func:`clip_bboxes`."""
        loc = pred_bboxes * self.normalizer
        centers = (bboxes[..., 0:2] + bboxes[..., 2:4]) / 2
        wh = bboxes[..., 2:4] - bboxes[..., 0:2]
        w, h = wh[..., 0:1], wh[..., 1:2]
        top, bottom = h * loc[..., 0:1], h * loc[..., 1:2]
        left, right = w * loc[..., 2:3], w * loc[..., 3:4]
        cx, cy = centers[..., 0:1], centers[..., 1:2]
        decoded = torch.cat([cx - left, cy - top, cx + right, cy + bottom], dim=-1)
        return clip_bboxes(decoded, max_shape) if self.clip_border else decoded
