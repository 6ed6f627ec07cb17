"""MMDetection's ``MlvlPointGenerator``: one point per feature-map cell, for anchor-free heads.

Like :class:`~.anchor_generator.AnchorGenerator`, the grid is built from ``torch.arange`` of the
feature-map size and broadcasting only, so it follows dynamic input sizes in exported graphs.
"""

import torch
from torch import Tensor

from ...registry import MODELS
from .anchor_generator import as_pair


@MODELS.register_module()
class MlvlPointGenerator:
    """Points of each level of a feature pyramid (MMDetection 2.x/3.x semantics).

    Args:
        strides: per level, an int or ``(stride_w, stride_h)``.
        offset: points sit at ``(i + offset) * stride``; FCOS uses 0.5 (cell centres).

    A level's points are ``[H * W, 2]`` ``(x, y)`` in (y, x) order, or ``[H * W, 4]``
    ``(x, y, stride_w, stride_h)`` with ``with_stride``.
    """

    def __init__(self, strides: list, offset: float = 0.5):
        self.strides = [as_pair(stride) for stride in strides]
        self.offset = offset

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """One point per location, per level."""
        return [1 for _ in self.strides]

    def single_level_grid_priors(
        self,
        featmap_size,
        level_idx: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = 'cpu',
        with_stride: bool = False,
    ) -> Tensor:
        """Points of one level in (y, x) order.

        Args:
            featmap_size: ``(H, W)``: ints, SymInts or traced sizes (e.g. ``x.shape[-2:]``).
        """
        feat_h, feat_w = featmap_size
        stride_w, stride_h = self.strides[level_idx]
        shift_x = (torch.arange(0, feat_w, device=device).to(dtype) + self.offset) * stride_w
        shift_y = (torch.arange(0, feat_h, device=device).to(dtype) + self.offset) * stride_h
        # [1, W, 2] * (1, 0) + [H, 1, 2] * (0, 1) -> [H, W, 2] (x, y) by broadcasting only
        x_mask = torch.tensor([1.0, 0.0], dtype=dtype, device=device)
        y_mask = torch.tensor([0.0, 1.0], dtype=dtype, device=device)
        points = shift_x.reshape(1, -1, 1) * x_mask + shift_y.reshape(-1, 1, 1) * y_mask
        points = points.reshape(-1, 2)
        if with_stride:
            strides = torch.tensor([stride_w, stride_h], dtype=dtype, device=device)
            points = torch.cat([points, torch.ones_like(points) * strides], dim=-1)
        return points

    def grid_priors(
        self,
        featmap_sizes: list,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = 'cpu',
        with_stride: bool = False,
    ) -> list[Tensor]:
        """Points of every level: a list of ``[H_l * W_l, 2]`` (or ``[H_l * W_l, 4]``)."""
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(
                f'{self.num_levels} feature-map sizes expected, got {len(featmap_sizes)}'
            )
        return [
            self.single_level_grid_priors(size, i, dtype, device, with_stride)
            for i, size in enumerate(featmap_sizes)
        ]

    def __repr__(self) -> str:
        return f'{type(self).__name__}(strides={self.strides}, offset={self.offset})'
