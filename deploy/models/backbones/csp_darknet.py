"""CSPDarknet (MMDetection's ``CSPDarknet``), the YOLOX backbone, with its ``Focus`` stem.

Children ``stem`` (Focus: space-to-depth, then ``stem.conv``, a 3x3 ConvModule) and
``stage1..stage4`` (P5; ``stage5`` too for P6), each a ``Sequential`` of a 3x3 stride-2
ConvModule, an ``SPPBottleneck`` in the last stage only, and a ``CSPLayer`` of Darknet
bottlenecks. Widths scale by ``int(c * widen_factor)``, block counts by
``max(round(n * deepen_factor), 1)``. BN eps 1e-3, Swish (= SiLU) activations by default.
"""

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule
from ..layers.csp_layer import CSPLayer, SPPBottleneck

_YOLOX_NORM = dict(type='BN', momentum=0.03, eps=0.001)
_SWISH = dict(type='Swish')


class Focus(nn.Module):
    """Space-to-depth (pixel grids (even, even), (odd, even), (even, odd), (odd, odd) as
    (row, column), concatenated on channels), then ``conv``: a ConvModule at half resolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
    ):
        super().__init__()
        self.conv = ConvModule(
            in_channels * 4,
            out_channels,
            kernel_size,
            stride,
            padding=(kernel_size - 1) // 2,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg or _YOLOX_NORM,
            act_cfg=act_cfg or _SWISH,
        )

    def forward(self, x: Tensor) -> Tensor:
        top_left = x[..., ::2, ::2]
        bottom_left = x[..., 1::2, ::2]
        top_right = x[..., ::2, 1::2]
        bottom_right = x[..., 1::2, 1::2]
        return self.conv(torch.cat((top_left, bottom_left, top_right, bottom_right), dim=1))


@MODELS.register_module()
class CSPDarknet(nn.Module):
    """CSPDarknet with MMDetection's arguments and checkpoint names.

    Args:
        arch: ``'P5'`` (4 stages, outputs up to stride 32) or ``'P6'`` (5 stages).
        deepen_factor, widen_factor: depth and width multipliers (YOLOX-s: 0.33, 0.5).
        out_indices: outputs among (0: stem, 1..: stages).
        frozen_stages, norm_eval, init_cfg: training only.
        use_depthwise: only False is supported (no released YOLOX config uses it but nano).
        arch_ovewrite: a replacement stage table (MMDetection's spelling).
        spp_kernal_sizes: max-pool kernels of the SPP bottleneck (MMDetection's spelling).
        conv_cfg, norm_cfg, act_cfg: of every ConvModule.
    """

    # (in, out, blocks, add_identity, use_spp) per stage
    arch_settings = {
        'P5': [
            [64, 128, 3, True, False],
            [128, 256, 9, True, False],
            [256, 512, 9, True, False],
            [512, 1024, 3, False, True],
        ],
        'P6': [
            [64, 128, 3, True, False],
            [128, 256, 9, True, False],
            [256, 512, 9, True, False],
            [512, 768, 3, True, False],
            [768, 1024, 3, False, True],
        ],
    }

    def __init__(
        self,
        arch: str = 'P5',
        deepen_factor: float = 1.0,
        widen_factor: float = 1.0,
        out_indices: tuple = (2, 3, 4),
        frozen_stages: int = -1,
        use_depthwise: bool = False,
        arch_ovewrite: list | None = None,
        spp_kernal_sizes: tuple = (5, 9, 13),
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        norm_eval: bool = False,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        if arch not in self.arch_settings:
            raise ConfigError(f'CSPDarknet: arch must be one of {sorted(self.arch_settings)}')
        if use_depthwise:
            raise ConfigError('CSPDarknet: use_depthwise=True is not supported')
        stages = arch_ovewrite or self.arch_settings[arch]
        if not set(out_indices) <= set(range(len(stages) + 1)):
            raise ConfigError(f'CSPDarknet: out_indices {out_indices} out of range')
        self.out_indices = tuple(out_indices)
        cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg or _YOLOX_NORM, act_cfg=act_cfg or _SWISH)
        self.stem = Focus(3, int(stages[0][0] * widen_factor), kernel_size=3, **cfg)
        self.layers = ['stem']
        for i, (in_ch, out_ch, blocks, add_identity, use_spp) in enumerate(stages):
            in_ch, out_ch = int(in_ch * widen_factor), int(out_ch * widen_factor)
            blocks = max(round(blocks * deepen_factor), 1)
            stage = [ConvModule(in_ch, out_ch, 3, stride=2, padding=1, **cfg)]
            if use_spp:
                stage.append(SPPBottleneck(out_ch, out_ch, kernel_sizes=spp_kernal_sizes, **cfg))
            stage.append(
                CSPLayer(out_ch, out_ch, num_blocks=blocks, add_identity=add_identity, **cfg)
            )
            self.add_module(f'stage{i + 1}', nn.Sequential(*stage))
            self.layers.append(f'stage{i + 1}')

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
