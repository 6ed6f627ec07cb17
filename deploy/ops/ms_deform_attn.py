"""Multi-scale deformable attention (Zhu et al., 2021) as plain PyTorch that exports to standard
ONNX: one ``GridSample`` per level (opset 16+), no custom op and no plugin.

The semantics are MMCV's ``MultiScaleDeformableAttention`` kernel: every query, head, level and
point samples its level's value map bilinearly at a normalised location ``(u, v)`` in
``[0, 1]``, which is the pixel coordinate ``(u * W - 0.5, v * H - 0.5)`` (``align_corners=False``);
neighbours outside the map contribute zero (no clamping); the samples are summed with the
attention weights over levels and points. ``tests/test_ms_deform_attn.py`` checks this against a
per-point loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['multi_scale_deformable_attention']


def multi_scale_deformable_attention(
    values: list[Tensor], sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Weighted bilinear samples of every level's value map.

    Args:
        values: one ``[B * M, D, H_l, W_l]`` map per level (``M`` heads of ``D`` channels, the
            batch outermost: row ``b * M + m``).
        sampling_locations: ``[B, Q, M, L, P, 2]`` normalised ``(x, y)`` in the level's map.
        attention_weights: ``[B, Q, M, L, P]``.

    Returns:
        ``[B, Q, M * D]``, heads outermost in the channels.
    """
    batch, queries, heads, levels, points, _ = sampling_locations.shape
    # grid_sample's coordinates are 2 * u - 1 in [-1, 1]; rows [B * M, Q, P, 2]
    grids = (2 * sampling_locations - 1).permute(0, 2, 1, 3, 4, 5).flatten(0, 1)
    samples = [
        F.grid_sample(
            value,
            grids[:, :, level],
            mode='bilinear',
            padding_mode='zeros',
            align_corners=False,
        )  # [B * M, D, Q, P]
        for level, value in enumerate(values)
    ]
    stacked = torch.stack(samples, dim=3).flatten(-2)  # [B * M, D, Q, L * P]
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(batch * heads, 1, queries, -1)
    out = (stacked * weights).sum(-1)  # [B * M, D, Q]
    return out.reshape(batch, -1, queries).transpose(1, 2)
