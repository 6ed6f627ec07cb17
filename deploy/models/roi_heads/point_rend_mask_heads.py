"""PointRend's two mask heads (MMDetection's ``CoarseMaskHead`` and ``MaskPointHead``).

* :class:`CoarseMaskHead`: RoI features ``[K, 256, 14, 14]`` -> a strided 2x2 conv (14 -> 7) ->
  two fully connected layers -> ``[K, num_classes, 7, 7]`` coarse mask logits.
* :class:`MaskPointHead`: a shared MLP (``Conv1d`` with kernel 1) that classifies single points
  from their fine-grained FPN features concatenated with the coarse logits sampled at the same
  points: ``[K, 256 + num_classes, P]`` -> ``[K, num_classes, P]`` logits.
"""

from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule
from .mask_heads import FCNMaskHead


@MODELS.register_module()
class CoarseMaskHead(FCNMaskHead):
    """Children ``convs.{i}`` (none by default), ``downsample_conv`` (ConvModule), ``fcs.{i}``
    (Linear) and ``fc_logits`` (Linear), as in MMDetection.

    Args:
        num_convs: 3x3 convs before the downsampling (MMDetection's default 0).
        num_fcs: fully connected layers (at least 1).
        fc_out_channels: their width.
        downsample_factor: kernel and stride of ``downsample_conv`` (1: none).
        roi_feat_size, in_channels, conv_out_channels, num_classes, conv_cfg, norm_cfg,
        loss_mask, init_cfg: as :class:`FCNMaskHead`.
    """

    def __init__(
        self,
        num_convs: int = 0,
        num_fcs: int = 2,
        fc_out_channels: int = 1024,
        downsample_factor: int = 2,
        roi_feat_size=14,
        in_channels: int = 256,
        conv_out_channels: int = 256,
        num_classes: int = 80,
        class_agnostic: bool = False,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        **kwargs,
    ):
        if class_agnostic:
            raise ConfigError('CoarseMaskHead class_agnostic=True is not supported')
        if num_fcs < 1 or downsample_factor < 1:
            raise ConfigError('CoarseMaskHead needs num_fcs >= 1 and downsample_factor >= 1')
        size = (roi_feat_size, roi_feat_size) if isinstance(roi_feat_size, int) else roi_feat_size
        super().__init__(
            num_convs=num_convs,
            roi_feat_size=size[0],
            in_channels=in_channels,
            conv_out_channels=conv_out_channels,
            num_classes=num_classes,
            upsample_cfg=dict(type=None),
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            **kwargs,
        )
        del self.conv_logits  # replaced by fc_logits
        self.roi_feat_size = tuple(size)
        self.num_fcs = num_fcs
        self.fc_out_channels = fc_out_channels
        self.downsample_factor = downsample_factor
        if downsample_factor > 1:
            self.downsample_conv = ConvModule(
                conv_out_channels if num_convs > 0 else in_channels,
                conv_out_channels,
                kernel_size=downsample_factor,
                stride=downsample_factor,
                padding=0,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
            )
        else:
            self.downsample_conv = None
        self.output_size = (size[0] // downsample_factor, size[1] // downsample_factor)
        area = self.output_size[0] * self.output_size[1]
        self.fcs = nn.ModuleList(
            nn.Linear(conv_out_channels * area if i == 0 else fc_out_channels, fc_out_channels)
            for i in range(num_fcs)
        )
        self.fc_logits = nn.Linear(fc_out_channels, num_classes * area)

    def forward(self, x: Tensor) -> Tensor:
        """``[K, C, 14, 14]`` RoI features -> coarse logits ``[K, num_classes, 7, 7]``."""
        for conv in self.convs:
            x = conv(x)
        if self.downsample_conv is not None:
            x = self.downsample_conv(x)
        x = x.flatten(1)
        for fc in self.fcs:
            x = self.relu(fc(x))
        return self.fc_logits(x).reshape(-1, self.num_classes, *self.output_size)


@MODELS.register_module()
class MaskPointHead(nn.Module):
    """Children ``fcs.{i}`` (ConvModule with a ``Conv1d``) and ``fc_logits`` (``Conv1d``), as in
    MMDetection.

    Args:
        num_classes: logits per point.
        num_fcs: hidden layers.
        in_channels: channels of the fine-grained features.
        fc_channels: width of the hidden layers.
        coarse_pred_each_layer: concatenate the coarse logits to the input of every layer (not
            only the first).
        conv_cfg, norm_cfg, act_cfg: of the hidden layers.
        class_agnostic: not supported (no zoo model uses it).
        loss_point, init_cfg: accepted for config compatibility.
    """

    def __init__(
        self,
        num_classes: int,
        num_fcs: int = 3,
        in_channels: int = 256,
        fc_channels: int = 256,
        class_agnostic: bool = False,
        coarse_pred_each_layer: bool = True,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: Mapping | None = MappingProxyType({'type': 'ReLU'}),
        loss_point: dict | None = None,
        init_cfg=None,
    ):
        super().__init__()
        if class_agnostic:
            raise ConfigError('MaskPointHead class_agnostic=True is not supported')
        self.num_classes = num_classes
        self.coarse_pred_each_layer = coarse_pred_each_layer
        fc_in = in_channels + num_classes
        self.fcs = nn.ModuleList()
        for _ in range(num_fcs):
            self.fcs.append(
                ConvModule(
                    fc_in,
                    fc_channels,
                    kernel_size=1,
                    conv_cfg=conv_cfg or dict(type='Conv1d'),
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                )
            )
            fc_in = fc_channels + (num_classes if coarse_pred_each_layer else 0)
        self.fc_logits = nn.Conv1d(fc_in, num_classes, kernel_size=1)

    def forward(self, fine_grained_feats: Tensor, coarse_feats: Tensor) -> Tensor:
        """``fine_grained_feats [K, in_channels, P]``, ``coarse_feats [K, num_classes, P]`` ->
        point logits ``[K, num_classes, P]``."""
        x = torch.cat([fine_grained_feats, coarse_feats], dim=1)
        for fc in self.fcs:
            x = fc(x)
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse_feats], dim=1)
        return self.fc_logits(x)
