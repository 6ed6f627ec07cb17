"""PointRend's RoI feature extraction: MMCV's ``SimpleRoIAlign`` and MMDetection's
``GenericRoIExtractor``.

``SimpleRoIAlign`` samples one bilinear point at the centre of each of the ``oh x ow`` cells of an
RoI (no averaging over several samples per bin, unlike ``RoIAlign``):

    cell (i, j) centre = ((j + 0.5) / ow, (i + 0.5) / oh) in the RoI
                       -> (x1 + u * (x2 - x1), y1 + v * (y2 - y1)) in input pixels
                       -> read from the feature map with grid_sample (align_corners=False)

``GenericRoIExtractor`` pools every RoI from *every* level it names (no level mapping) and sums or
concatenates the results; PointRend names only P2 (stride 4).

Eager (:meth:`SimpleRoIAlign.forward`) samples each image's RoIs from that image, as MMCV does.
Exported graphs (:meth:`SimpleRoIAlign.forward_deploy`) get the detections of a batch as ``B x K``
RoIs, image-major (``batched_rois``), and sample them in one ``GridSample`` of
``[B, C, H, W]`` features at a ``[B, K, oh * ow, 2]`` grid: the same points, no data-dependent
shapes.
"""

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.point_sample import point_sample, regular_grid_points, roi_points_to_image_points
from ...registry import MODELS
from .roi_extractors import DEPLOY_MODES


@MODELS.register_module()
class SimpleRoIAlign(nn.Module):
    """MMCV's ``SimpleRoIAlign`` (no parameters): ``(features, rois [K, 5]) -> [K, C, oh, ow]``.

    Args:
        output_size: int or ``(oh, ow)``.
        spatial_scale: ``1 / stride`` of the feature map (set by the extractor).
        aligned: True (default): ``grid_sample`` with ``align_corners=False``; False: MMCV's
            legacy ``align_corners=True``.
    """

    def __init__(self, output_size, spatial_scale: float = 1.0, aligned: bool = True):
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        self.output_size = tuple(int(s) for s in size)
        self.spatial_scale = float(spatial_scale)
        self.aligned = aligned
        # The cell centres: a constant of the graph, not a checkpoint key.
        self.register_buffer('cell_points', regular_grid_points(self.output_size), persistent=False)

    def _sample(self, features: Tensor, rois: Tensor) -> Tensor:
        """``features [B, C, H, W]``, ``rois [B * n, 5]`` (image-major, n per image) ->
        ``[B * n, C, oh, ow]``."""
        points = roi_points_to_image_points(rois, self.cell_points, features, self.spatial_scale)
        num_points = points.shape[1]
        grid = points.reshape(features.shape[0], -1, num_points, 2)
        feats = point_sample(features, grid, align_corners=not self.aligned)  # [B, C, n, P]
        return feats.transpose(1, 2).reshape(-1, features.shape[1], *self.output_size)

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        """Eager: each image's RoIs (``rois[:, 0]``) are sampled from that image."""
        out = (rois[:, :1, None, None] * 0.0).expand(-1, features.shape[1], *self.output_size)
        out = out.contiguous()
        for b in range(features.shape[0]):
            inds = torch.nonzero(rois[:, 0].long() == b).squeeze(1)
            if len(inds):
                out[inds] = self._sample(features[b : b + 1], rois[inds])
        return out

    def forward_deploy(self, features: Tensor, rois: Tensor) -> Tensor:
        """Traceable: ``rois [B * K, 5]`` hold K RoIs of each image, image-major."""
        return self._sample(features, rois)

    def extra_repr(self) -> str:
        return (
            f'output_size={self.output_size}, spatial_scale={self.spatial_scale}, '
            f'aligned={self.aligned}'
        )


@MODELS.register_module()
class GenericRoIExtractor(nn.Module):
    """Pool every RoI from every level in ``featmap_strides`` and aggregate.

    Args:
        roi_layer: the layer config, e.g. ``dict(type='SimpleRoIAlign', output_size=14)``; one
            layer per level is built with ``spatial_scale = 1/stride``.
        out_channels: channels of the output (the levels' sum for ``'concat'``).
        featmap_strides: strides of the levels used (``num_inputs`` = their count).
        aggregation: ``'sum'`` or ``'concat'`` (along channels).
        deploy_mode: accepted (``'masked'`` / ``'nonzero'``) so that one override can set every
            extractor of a model; every RoI goes through every level here, so both export the
            same graph.
        pre_cfg, post_cfg: plugin layers; not supported (no zoo model uses them).
        init_cfg: accepted for config compatibility (unused).
    """

    def __init__(
        self,
        roi_layer: dict,
        out_channels: int,
        featmap_strides: list[int],
        aggregation: str = 'sum',
        pre_cfg: dict | None = None,
        post_cfg: dict | None = None,
        deploy_mode: str = 'nonzero',
        init_cfg: dict | None = None,
    ):
        super().__init__()
        if aggregation not in ('sum', 'concat'):
            raise ConfigError(
                f"GenericRoIExtractor aggregation must be 'sum' or 'concat', got {aggregation!r}"
            )
        if pre_cfg is not None or post_cfg is not None:
            raise ConfigError('GenericRoIExtractor pre_cfg / post_cfg are not supported')
        if deploy_mode not in DEPLOY_MODES:
            raise ConfigError(
                f'GenericRoIExtractor deploy_mode must be one of {", ".join(DEPLOY_MODES)}, '
                f'got {deploy_mode!r}'
            )
        self.roi_layers = nn.ModuleList(
            MODELS.build(dict(roi_layer, spatial_scale=1.0 / s)) for s in featmap_strides
        )
        self.out_channels = out_channels
        self.featmap_strides = list(featmap_strides)
        self.aggregation = aggregation
        self.deploy_mode = deploy_mode

    @property
    def num_inputs(self) -> int:
        return len(self.featmap_strides)

    @property
    def output_size(self) -> tuple[int, int]:
        return self.roi_layers[0].output_size

    def _aggregate(self, pooled: list[Tensor]) -> Tensor:
        if len(pooled) == 1:
            return pooled[0]
        if self.aggregation == 'concat':
            out = torch.cat(pooled, dim=1)
            if out.shape[1] != self.out_channels:
                raise ConfigError(
                    f'GenericRoIExtractor concatenates {out.shape[1]} channels, but '
                    f'out_channels is {self.out_channels}'
                )
            return out
        return sum(pooled)

    def forward(self, feats: tuple[Tensor, ...], rois: Tensor) -> Tensor:
        """Eager: ``feats`` (at least :attr:`num_inputs` maps), ``rois [K, 5]`` ->
        ``[K, out_channels, oh, ow]``."""
        return self._aggregate([layer(f, rois) for layer, f in zip(self.roi_layers, feats)])

    def forward_deploy(self, feats: tuple[Tensor, ...], rois: Tensor) -> Tensor:
        """Traceable, for ``B x K`` image-major RoIs (see the module docstring)."""
        return self._aggregate(
            [layer.forward_deploy(f, rois) for layer, f in zip(self.roi_layers, feats)]
        )
