"""RoI feature extraction from an FPN: MMDetection's ``RoIAlign`` layer and ``SingleRoIExtractor``.

Each RoI is pooled from one FPN level, chosen by its size (``finest_scale``, default 56):

    level = floor(log2(sqrt(w * h) / finest_scale + 1e-6)), clamped to [0, num_levels - 1]

so a 224 x 224 RoI is pooled from level 2 (stride 16). The level is computed with comparisons
against powers of two (``>= 2**k``), which equals the floor of the log except within a rounding
error of a level boundary, and gives the same answer in every runtime (a graph's Log may round
differently from PyTorch's log2).

Exported graphs pick the levels in one of two ways, set per extractor with ``deploy_mode``:

* ``'nonzero'`` (default): each level gathers its own RoIs (``NonZero``) and pools only those; the
  levels' outputs are concatenated and put back in RoI order by one ``Gather`` through the
  inverse permutation (a ``ScatterElements`` of the indices). MMDeploy's graphs pool the same
  way. Data-dependent shapes inside the graph (its inputs and outputs keep theirs).
* ``'masked'``: every RoI goes through every level's RoiAlign with static shapes. RoIs of other
  levels are shrunk to an empty box first (so their adaptive sampling grid is empty) and their
  output is multiplied by 0. No NonZero, no data-dependent shape, for engines that want none;
  but four full-size ``[K, C, 7, 7]`` outputs, their products and sums cost Faster R-CNN R50
  about 130 ms of its 4 s in ONNX Runtime (the profiler: RoiAlign 360 + Mul 63 + Add 30 +
  Expand 6 ms against RoiAlign 316 + Concat 6 + GatherND 5 ms) and 300 MiB of peak memory.

Both give exactly the eager result, where each level pools only its own RoIs (MMDetection).
"""

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.roi_align import roi_align
from ...registry import MODELS

DEPLOY_MODES = ('masked', 'nonzero')


@MODELS.register_module()
class RoIAlign(nn.Module):
    """MMCV's ``RoIAlign`` layer (no parameters): ``(features, rois [K, 5]) -> [K, C, oh, ow]``.

    Args:
        output_size: int or ``(h, w)``.
        spatial_scale: ``1 / stride`` of the feature map (set by the extractor).
        sampling_ratio: samples per bin and axis; 0 is adaptive.
        pool_mode: only ``'avg'`` (the default, and what every config uses).
        aligned: half-pixel alignment.
        use_torchvision: accepted for config compatibility (same maths).
    """

    def __init__(
        self,
        output_size,
        spatial_scale: float = 1.0,
        sampling_ratio: int = 0,
        pool_mode: str = 'avg',
        aligned: bool = True,
        use_torchvision: bool = False,
    ):
        super().__init__()
        if pool_mode != 'avg':
            raise ConfigError(f"RoIAlign pool_mode {pool_mode!r} is not supported (only 'avg')")
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        self.output_size = tuple(int(s) for s in size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = aligned

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return roi_align(
            features, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def extra_repr(self) -> str:
        return (
            f'output_size={self.output_size}, spatial_scale={self.spatial_scale}, '
            f'sampling_ratio={self.sampling_ratio}, aligned={self.aligned}'
        )


@MODELS.register_module()
class SingleRoIExtractor(nn.Module):
    """Pool each RoI from the one FPN level that matches its size.

    Args:
        roi_layer: the layer config, e.g. ``dict(type='RoIAlign', output_size=7,
            sampling_ratio=0)``; one layer per level is built with ``spatial_scale = 1/stride``.
        out_channels: channels of the features (and of the output).
        featmap_strides: strides of the levels used (``num_inputs`` = their count).
        finest_scale: RoI scale mapped to level 0.
        deploy_mode: ``'masked'`` or ``'nonzero'`` (see the module docstring); export only.
        init_cfg: ignored.
    """

    def __init__(
        self,
        roi_layer: dict,
        out_channels: int,
        featmap_strides: list[int],
        finest_scale: int = 56,
        deploy_mode: str = 'nonzero',
        init_cfg: dict | None = None,
    ):
        super().__init__()
        if deploy_mode not in DEPLOY_MODES:
            raise ConfigError(
                f'SingleRoIExtractor deploy_mode must be one of '
                f'{", ".join(DEPLOY_MODES)}, got {deploy_mode!r}'
            )
        self.roi_layers = nn.ModuleList(
            MODELS.build(dict(roi_layer, spatial_scale=1.0 / s)) for s in featmap_strides
        )
        self.out_channels = out_channels
        self.featmap_strides = list(featmap_strides)
        self.finest_scale = finest_scale
        self.deploy_mode = deploy_mode

    @property
    def num_inputs(self) -> int:
        return len(self.featmap_strides)

    @property
    def output_size(self) -> tuple[int, int]:
        return self.roi_layers[0].output_size

    def map_roi_levels(self, rois: Tensor, num_levels: int) -> Tensor:
        """``rois [K, 5]`` -> level index ``[K]`` int64 (see the module docstring)."""
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        ratio = scale / self.finest_scale + 1e-6
        # Arithmetic rather than zeros_like: a shape-derived constant would freeze the RoI count
        # in the legacy exporter.
        level = (ratio * 0).long()
        for k in range(1, num_levels):
            level = level + (ratio >= 2.0**k).long()
        return level

    def _empty(self, feats: tuple[Tensor, ...], rois: Tensor) -> Tensor:
        # Built from the inputs so the legacy tracer keeps the RoI count dynamic.
        return (rois[:, :1, None, None] * 0.0).expand(
            -1, self.out_channels, *self.output_size
        ) + 0.0

    def forward(self, feats: tuple[Tensor, ...], rois: Tensor) -> Tensor:
        """Eager pooling (each level pools only its RoIs).

        Args:
            feats: FPN maps, at least :attr:`num_inputs` of them.
            rois: ``[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` in input pixels.

        Returns:
            ``[K, out_channels, oh, ow]``.
        """
        return self._forward_nonzero(feats, rois)

    def forward_deploy(self, feats: tuple[Tensor, ...], rois: Tensor) -> Tensor:
        """Traceable pooling with the configured :attr:`deploy_mode` (same values as eager)."""
        if self.deploy_mode == 'masked':
            return self._forward_masked(feats, rois)
        return self._forward_nonzero(feats, rois)

    def _forward_nonzero(self, feats, rois: Tensor) -> Tensor:
        levels = self.map_roi_levels(rois, self.num_inputs)
        pooled, order = [], []
        for i, layer in enumerate(self.roi_layers):
            inds = torch.nonzero(levels == i).squeeze(1)
            pooled.append(layer(feats[i], rois[inds]))
            order.append(inds)
        # The levels' outputs concatenated, put back in RoI order by one gather through the
        # inverse permutation (every RoI has exactly one level). Writing each level into a
        # zero tensor instead costs a full copy of the [K, C, 7, 7] output per level.
        order = torch.cat(order)
        positions = torch.arange(order.shape[0], dtype=order.dtype, device=order.device)
        inverse = torch.empty_like(order).scatter(0, order, positions)
        return torch.cat(pooled)[inverse]

    def _forward_masked(self, feats, rois: Tensor) -> Tensor:
        levels = self.map_roi_levels(rois, self.num_inputs)
        out = self._empty(feats, rois)
        for i, layer in enumerate(self.roi_layers):
            match = (levels == i).to(rois.dtype)
            # An empty box keeps the RoI's batch index and has an empty adaptive sampling grid.
            level_rois = torch.cat([rois[:, :1], rois[:, 1:] * match[:, None]], dim=1)
            out = out + layer(feats[i], level_rois) * match[:, None, None, None]
        return out
