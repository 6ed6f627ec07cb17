"""MMDetection's cross-stage-partial layer and its blocks (CSPDarknet, CSPNeXt, their PAFPNs).

Module and child names follow MMDetection 3.x (``main_conv``, ``short_conv``, ``final_conv``,
``blocks``, ``attention``; ``conv1``/``conv2`` in the blocks; ``depthwise_conv``/``pointwise_conv``
in MMCV's ``DepthwiseSeparableConvModule``), so its checkpoints load unchanged.
"""

from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import Tensor, nn

from .conv_module import ConvModule

# MMDetection's CSP defaults: BN(momentum 0.03, eps 1e-3) and Swish (= SiLU).
_CSP_NORM = MappingProxyType({'type': 'BN', 'momentum': 0.03, 'eps': 0.001})
_SWISH = MappingProxyType({'type': 'Swish'})


def _conv(
    in_ch: int, out_ch: int, kernel: int, norm_cfg, act_cfg, conv_cfg=None, **kw
) -> nn.Module:
    return ConvModule(
        in_ch,
        out_ch,
        kernel,
        padding=kernel // 2,
        conv_cfg=conv_cfg,
        norm_cfg=dict(norm_cfg) if norm_cfg is not None else None,
        act_cfg=dict(act_cfg) if act_cfg is not None else None,
        **kw,
    )


class DepthwiseSeparableConvModule(nn.Module):
    """MMCV's depthwise (k x k, groups = in) then pointwise 1x1 ConvModule, each with norm + act."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        conv_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = None,
        act_cfg: Mapping | None = MappingProxyType({'type': 'ReLU'}),
    ):
        super().__init__()
        norm = dict(norm_cfg) if norm_cfg is not None else None
        act = dict(act_cfg) if act_cfg is not None else None
        self.depthwise_conv = ConvModule(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=in_channels,
            conv_cfg=conv_cfg,
            norm_cfg=norm,
            act_cfg=act,
        )
        self.pointwise_conv = ConvModule(
            in_channels, out_channels, 1, conv_cfg=conv_cfg, norm_cfg=norm, act_cfg=act
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ChannelAttention(nn.Module):
    """Squeeze-excite gate: ``x * hardsigmoid(fc(mean_hw(x)))``, ``fc`` a 1x1 conv with bias.

    Hard-sigmoid is ``clamp((x + 3) / 6, 0, 1)`` (``nn.Hardsigmoid``, ONNX ``HardSigmoid``).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, 1, 0, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        # ReduceMean rather than AdaptiveAvgPool: one standard op at any input size
        pooled = x.mean(dim=(2, 3), keepdim=True)
        return x * self.act(self.fc(pooled))


class DarknetBottleneck(nn.Module):
    """1x1 ConvModule to ``out * expansion`` then 3x3 ConvModule (depthwise-separable when
    ``use_depthwise``); ``+ x`` when ``add_identity`` and the channel counts match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expansion: float = 0.5,
        add_identity: bool = True,
        use_depthwise: bool = False,
        conv_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = _CSP_NORM,
        act_cfg: Mapping | None = _SWISH,
    ):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = _conv(in_channels, hidden, 1, norm_cfg, act_cfg, conv_cfg)
        if use_depthwise:
            self.conv2 = DepthwiseSeparableConvModule(
                hidden,
                out_channels,
                3,
                padding=1,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg,
            )
        else:
            self.conv2 = _conv(hidden, out_channels, 3, norm_cfg, act_cfg, conv_cfg)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPNeXtBlock(nn.Module):
    """RTMDet's block: 3x3 ConvModule to ``out * expansion`` (depthwise-separable when
    ``use_depthwise``), then a depthwise-separable ``kernel_size`` ConvModule; ``+ x`` when
    ``add_identity`` and the channel counts match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expansion: float = 0.5,
        add_identity: bool = True,
        use_depthwise: bool = False,
        kernel_size: int = 5,
        conv_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = _CSP_NORM,
        act_cfg: Mapping | None = MappingProxyType({'type': 'SiLU'}),
    ):
        super().__init__()
        hidden = int(out_channels * expansion)
        if use_depthwise:
            self.conv1 = DepthwiseSeparableConvModule(
                in_channels, hidden, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg
            )
        else:
            self.conv1 = _conv(in_channels, hidden, 3, norm_cfg, act_cfg, conv_cfg)
        self.conv2 = DepthwiseSeparableConvModule(
            hidden,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
        )
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross-stage partial layer: ``final_conv(cat[blocks(main_conv(x)), short_conv(x)])``, the
    concat gated by :class:`ChannelAttention` when ``channel_attention``.

    Args:
        in_channels, out_channels: of the layer; the two branches have ``out * expand_ratio``.
        expand_ratio: branch width factor.
        num_blocks: blocks on the main branch (each keeps the branch width: expansion 1.0).
        add_identity: residual in the blocks.
        use_depthwise: depthwise-separable 3x3 inside the blocks.
        use_cspnext_block: :class:`CSPNeXtBlock` (RTMDet) instead of :class:`DarknetBottleneck`.
        channel_attention: gate the concat (CSPNeXt backbone).
        conv_cfg, norm_cfg, act_cfg: of every ConvModule.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: float = 0.5,
        num_blocks: int = 1,
        add_identity: bool = True,
        use_depthwise: bool = False,
        use_cspnext_block: bool = False,
        channel_attention: bool = False,
        conv_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = _CSP_NORM,
        act_cfg: Mapping | None = _SWISH,
        init_cfg: Mapping | None = None,
    ):
        super().__init__()
        block_cls = CSPNeXtBlock if use_cspnext_block else DarknetBottleneck
        mid = int(out_channels * expand_ratio)
        self.channel_attention = channel_attention
        self.main_conv = _conv(in_channels, mid, 1, norm_cfg, act_cfg, conv_cfg)
        self.short_conv = _conv(in_channels, mid, 1, norm_cfg, act_cfg, conv_cfg)
        self.final_conv = _conv(2 * mid, out_channels, 1, norm_cfg, act_cfg, conv_cfg)
        self.blocks = nn.Sequential(
            *(
                block_cls(
                    mid,
                    mid,
                    1.0,
                    add_identity,
                    use_depthwise,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                )
                for _ in range(num_blocks)
            )
        )
        if channel_attention:
            self.attention = ChannelAttention(2 * mid)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        if self.channel_attention:
            out = self.attention(out)
        return self.final_conv(out)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: 1x1 ConvModule to ``in / 2``; concat with stride-1 max-pools of
    each kernel size (padding ``k // 2``); 1x1 ConvModule to ``out_channels``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: tuple = (5, 9, 13),
        conv_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = _CSP_NORM,
        act_cfg: Mapping | None = _SWISH,
        init_cfg: Mapping | None = None,
    ):
        super().__init__()
        mid = in_channels // 2
        self.conv1 = _conv(in_channels, mid, 1, norm_cfg, act_cfg, conv_cfg)
        self.poolings = nn.ModuleList(
            nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2) for k in kernel_sizes
        )
        self.conv2 = _conv(
            mid * (len(kernel_sizes) + 1), out_channels, 1, norm_cfg, act_cfg, conv_cfg
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))
