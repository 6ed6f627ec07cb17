"""MMDetection's ``AnchorGenerator``: base anchors per level, shifted over the feature-map grid.

The grid is built from ``torch.arange`` of the feature-map size and broadcasting only, so the
feature-map size may be a plain int, a torch.export SymInt or a TorchScript-traced size: the ONNX
graph then computes anchors for whatever input size it is run at.
"""

import torch
from torch import Tensor

from ...errors import ConfigError
from ...registry import MODELS


def as_pair(value: int | float | tuple | list) -> tuple:
    """``(w, h)`` from one number or a pair (strides and base sizes are written either way)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


_pair = as_pair  # the former private name, for code that still imports it


@MODELS.register_module()
class AnchorGenerator:
    """Anchors for each level of a feature pyramid (MMDetection 2.x/3.x semantics).

    Args:
        strides: per level, an int or ``(stride_w, stride_h)``.
        ratios: height / width ratios.
        scales: anchor scales relative to the base size; or give ``octave_base_scale`` and
            ``scales_per_octave`` (scales ``octave_base_scale * 2**(i / scales_per_octave)``).
        base_sizes: per level (default: the smaller stride of the level).
        scale_major: order the anchors of a location ratio-major-outer / scale-inner (True) or
            scale-outer / ratio-inner (False).
        centers: per level ``(x, y)`` centre of the base anchors (default from ``center_offset``).
        center_offset: base anchors are centred at ``center_offset * base_size``.

    A base anchor has ``w = base_size / sqrt(r) * scale`` and ``h = base_size * sqrt(r) * scale``.
    """

    def __init__(
        self,
        strides: list,
        ratios: list[float],
        scales: list[float] | None = None,
        base_sizes: list[int] | None = None,
        scale_major: bool = True,
        octave_base_scale: float | None = None,
        scales_per_octave: int | None = None,
        centers: list[tuple] | None = None,
        center_offset: float = 0.0,
    ):
        if center_offset != 0 and centers is not None:
            raise ConfigError('AnchorGenerator: give centers or center_offset, not both')
        if not 0 <= center_offset <= 1:
            raise ConfigError(
                f'AnchorGenerator center_offset must be in [0, 1], got {center_offset}'
            )
        if centers is not None and len(centers) != len(strides):
            raise ConfigError('AnchorGenerator: one center per stride is needed')
        self.strides = [as_pair(stride) for stride in strides]
        self.base_sizes = (
            list(base_sizes) if base_sizes is not None else [min(stride) for stride in self.strides]
        )
        if len(self.base_sizes) != len(self.strides):
            raise ConfigError('AnchorGenerator: one base size per stride is needed')
        octave = octave_base_scale is not None and scales_per_octave is not None
        if octave == (scales is not None):
            raise ConfigError(
                'AnchorGenerator: give either scales or octave_base_scale with scales_per_octave'
            )
        if octave:
            scales = [
                octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)
            ]
        # float32 as in MMDetection, so anchors match its outputs bit for bit
        self.scales = torch.tensor(scales, dtype=torch.float32)
        self.ratios = torch.tensor(ratios, dtype=torch.float32)
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        self.scale_major = scale_major
        self.centers = centers
        self.center_offset = center_offset
        self.base_anchors = [
            self.gen_single_level_base_anchors(
                size, self.scales, self.ratios, None if centers is None else centers[i]
            )
            for i, size in enumerate(self.base_sizes)
        ]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """Anchors per location, per level."""
        return [anchors.shape[0] for anchors in self.base_anchors]

    num_base_anchors = num_base_priors

    def gen_single_level_base_anchors(
        self, base_size: float, scales: Tensor, ratios: Tensor, center: tuple | None = None
    ) -> Tensor:
        """Base anchors ``[len(ratios) * len(scales), 4]`` as ``x1, y1, x2, y2``."""
        if center is None:
            x_center = y_center = self.center_offset * base_size
        else:
            x_center, y_center = center
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        if self.scale_major:
            ws = (base_size * w_ratios[:, None] * scales[None, :]).reshape(-1)
            hs = (base_size * h_ratios[:, None] * scales[None, :]).reshape(-1)
        else:
            ws = (base_size * scales[:, None] * w_ratios[None, :]).reshape(-1)
            hs = (base_size * scales[:, None] * h_ratios[None, :]).reshape(-1)
        return torch.stack(
            [x_center - 0.5 * ws, y_center - 0.5 * hs, x_center + 0.5 * ws, y_center + 0.5 * hs],
            dim=-1,
        )

    def single_level_grid_priors(
        self,
        featmap_size,
        level_idx: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = 'cpu',
    ) -> Tensor:
        """Anchors ``[H * W * A, 4]`` of one level in (y, x, anchor) order.

        Args:
            featmap_size: ``(H, W)``: ints, SymInts or traced sizes (e.g. ``x.shape[-2:]``).
        """
        feat_h, feat_w = featmap_size
        stride_w, stride_h = self.strides[level_idx]
        base_anchors = self.base_anchors[level_idx].to(device=device, dtype=dtype)
        shift_x = torch.arange(0, feat_w, device=device).to(dtype) * stride_w
        shift_y = torch.arange(0, feat_h, device=device).to(dtype) * stride_h
        # [x, y, x, y] shifts by broadcasting: [1, W, 1, 4] + [H, 1, 1, 4] -> [H, W, 1, 4]
        x_mask = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=dtype, device=device)
        y_mask = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=dtype, device=device)
        shifts = shift_x.reshape(1, -1, 1, 1) * x_mask + shift_y.reshape(-1, 1, 1, 1) * y_mask
        return (shifts + base_anchors[None, None]).reshape(-1, 4)

    def grid_priors(
        self,
        featmap_sizes: list,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = 'cpu',
    ) -> list[Tensor]:
        """Anchors of every level: a list of ``[H_l * W_l * A_l, 4]`` (``x1, y1, x2, y2``)."""
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(
                f'{self.num_levels} feature-map sizes expected, got {len(featmap_sizes)}'
            )
        return [
            self.single_level_grid_priors(size, i, dtype=dtype, device=device)
            for i, size in enumerate(featmap_sizes)
        ]

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(strides={self.strides}, ratios={self.ratios.tolist()}, '
            f'scales={self.scales.tolist()}, base_sizes={self.base_sizes}, '
            f'scale_major={self.scale_major}, center_offset={self.center_offset})'
        )
