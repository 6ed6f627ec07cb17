"""YOLOX's path-aggregation FPN (MMDetection's ``YOLOXPAFPN``).

Top-down from the coarsest level: ``reduce_layers[k]`` (1x1 to the next-finer width; its output
replaces the coarse feature for the bottom-up pass), nearest 2x upsample, concat with the finer
input, ``top_down_blocks[k]`` (CSP layer without residuals). Bottom-up: ``downsamples[k]``
(3x3 stride 2), concat with the stored coarse feature, ``bottom_up_blocks[k]``. Then
``out_convs[i]`` (1x1) per level to ``out_channels``.
"""

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule
from ..layers.csp_layer import CSPLayer


@MODELS.register_module()
class YOLOXPAFPN(nn.Module):
    """Children ``reduce_layers``, ``top_down_blocks``, ``downsamples``, ``bottom_up_blocks``,
    ``out_convs`` as in MMDetection.

    Args:
        in_channels: channels of each input level, finest first.
        out_channels: channels of every output level.
        num_csp_blocks: blocks per CSP layer.
        use_depthwise: only False is supported.
        upsample_cfg: ``nn.Upsample`` arguments (nearest 2x).
        conv_cfg, norm_cfg, act_cfg: of every ConvModule (BN eps 1e-3 and Swish by default).
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        num_csp_blocks: int = 3,
        use_depthwise: bool = False,
        upsample_cfg: dict | None = None,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        if use_depthwise:
            raise ConfigError('YOLOXPAFPN: use_depthwise=True is not supported')
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        cfg = dict(
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg or dict(type='BN', momentum=0.03, eps=0.001),
            act_cfg=act_cfg or dict(type='Swish'),
        )
        self.upsample = nn.Upsample(**(upsample_cfg or dict(scale_factor=2, mode='nearest')))
        ch = self.in_channels
        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for idx in range(len(ch) - 1, 0, -1):
            self.reduce_layers.append(ConvModule(ch[idx], ch[idx - 1], 1, **cfg))
            self.top_down_blocks.append(
                CSPLayer(
                    ch[idx - 1] * 2,
                    ch[idx - 1],
                    num_blocks=num_csp_blocks,
                    add_identity=False,
                    **cfg,
                )
            )
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for idx in range(len(ch) - 1):
            self.downsamples.append(ConvModule(ch[idx], ch[idx], 3, stride=2, padding=1, **cfg))
            self.bottom_up_blocks.append(
                CSPLayer(
                    ch[idx] * 2, ch[idx + 1], num_blocks=num_csp_blocks, add_identity=False, **cfg
                )
            )
        self.out_convs = nn.ModuleList(ConvModule(c, out_channels, 1, **cfg) for c in ch)

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(
                f'YOLOXPAFPN expects {len(self.in_channels)} levels, got {len(inputs)}'
            )
        levels = len(inputs)
        # top-down: inner[0] is the finest merged feature, inner[1:] the reduced coarse ones
        inner = [inputs[-1]]
        for k, idx in enumerate(range(levels - 1, 0, -1)):
            high = self.reduce_layers[k](inner[0])
            inner[0] = high
            merged = torch.cat([self.upsample(high), inputs[idx - 1]], dim=1)
            inner.insert(0, self.top_down_blocks[k](merged))
        # bottom-up
        outs = [inner[0]]
        for idx in range(levels - 1):
            down = self.downsamples[idx](outs[-1])
            outs.append(self.bottom_up_blocks[idx](torch.cat([down, inner[idx + 1]], dim=1)))
        return tuple(conv(x) for conv, x in zip(self.out_convs, outs))
