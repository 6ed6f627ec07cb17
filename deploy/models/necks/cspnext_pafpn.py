"""RTMDet's neck (MMDetection's ``CSPNeXtPAFPN``): top-down and bottom-up CSP paths, then a 3x3
ConvModule per level to ``out_channels``."""

import torch
from torch import Tensor, nn

from ...registry import MODELS
from ..layers import ConvModule
from ..layers.csp_layer import CSPLayer, DepthwiseSeparableConvModule


@MODELS.register_module()
class CSPNeXtPAFPN(nn.Module):
    """Children ``reduce_layers``, ``top_down_blocks``, ``downsamples``, ``bottom_up_blocks``
    and ``out_convs`` as in MMDetection.

    Args:
        in_channels: channels of each input level, finest first.
        out_channels: channels of every output level.
        num_csp_blocks: blocks per CSP layer (no residual in the neck's blocks).
        use_depthwise: depthwise-separable downsampling convs and blocks.
        expand_ratio: CSP branch width factor.
        upsample_cfg: ``nn.Upsample`` arguments of the top-down path (nearest 2x).
        conv_cfg, norm_cfg, act_cfg: of every ConvModule.
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        num_csp_blocks: int = 3,
        use_depthwise: bool = False,
        expand_ratio: float = 0.5,
        upsample_cfg: dict | None = None,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        norm_cfg = norm_cfg or dict(type='BN', momentum=0.03, eps=0.001)
        act_cfg = act_cfg or dict(type='Swish')
        common = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.upsample = nn.Upsample(**(upsample_cfg or dict(scale_factor=2, mode='nearest')))
        down_conv = DepthwiseSeparableConvModule if use_depthwise else ConvModule

        def csp(in_ch: int, out_ch: int) -> CSPLayer:
            return CSPLayer(
                in_ch,
                out_ch,
                num_blocks=num_csp_blocks,
                add_identity=False,
                use_depthwise=use_depthwise,
                use_cspnext_block=True,
                expand_ratio=expand_ratio,
                **common,
            )

        chans = self.in_channels
        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for idx in range(len(chans) - 1, 0, -1):
            self.reduce_layers.append(ConvModule(chans[idx], chans[idx - 1], 1, **common))
            self.top_down_blocks.append(csp(chans[idx - 1] * 2, chans[idx - 1]))
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for idx in range(len(chans) - 1):
            self.downsamples.append(
                down_conv(chans[idx], chans[idx], 3, stride=2, padding=1, **common)
            )
            self.bottom_up_blocks.append(csp(chans[idx] * 2, chans[idx + 1]))
        self.out_convs = nn.ModuleList(
            ConvModule(c, out_channels, 3, padding=1, **common) for c in chans
        )

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Levels finest first (``[B, in_channels[i], H_i, W_i]``) -> ``out_channels`` each."""
        num = len(self.in_channels)
        inner_outs = [inputs[-1]]
        for idx in range(num - 1, 0, -1):
            k = num - 1 - idx
            # the reduced coarse map is also what the bottom-up path concatenates with
            feat_high = self.reduce_layers[k](inner_outs[0])
            inner_outs[0] = feat_high
            fused = torch.cat([self.upsample(feat_high), inputs[idx - 1]], 1)
            inner_outs.insert(0, self.top_down_blocks[k](fused))
        outs = [inner_outs[0]]
        for idx in range(num - 1):
            fused = torch.cat([self.downsamples[idx](outs[-1]), inner_outs[idx + 1]], 1)
            outs.append(self.bottom_up_blocks[idx](fused))
        return tuple(conv(out) for conv, out in zip(self.out_convs, outs))
