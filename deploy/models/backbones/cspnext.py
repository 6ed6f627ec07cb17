"""RTMDet's backbone (MMDetection's ``CSPNeXt``): a 3-conv stem and four CSP stages.

Each stage: a 3x3 stride-2 ConvModule, (last stage) an SPP bottleneck, then a
:class:`~deploy.models.layers.csp_layer.CSPLayer` of CSPNeXt blocks with channel attention.
Channels scale as ``int(c * widen_factor)``, blocks as ``max(round(n * deepen_factor), 1)``.
"""

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule
from ..layers.csp_layer import CSPLayer, SPPBottleneck

#: (in, out, blocks, add_identity, use_spp) per stage, before scaling
ARCH_SETTINGS = {
    'P5': [
        [64, 128, 3, True, False],
        [128, 256, 6, True, False],
        [256, 512, 6, True, False],
        [512, 1024, 3, False, True],
    ],
    'P6': [
        [64, 128, 3, True, False],
        [128, 256, 6, True, False],
        [256, 512, 6, True, False],
        [512, 768, 3, True, False],
        [768, 1024, 3, False, True],
    ],
}


@MODELS.register_module()
class CSPNeXt(nn.Module):
    """Children ``stem.{0,1,2}`` and ``stage{i}.{0,1(,2)}`` as in MMDetection.

    Args:
        arch: ``'P5'`` (strides 4..32) or ``'P6'``.
        deepen_factor, widen_factor: block-count and channel multipliers.
        out_indices: outputs, 0 being the stem and ``i`` stage ``i``.
        frozen_stages, norm_eval: training only (accepted).
        use_depthwise: depthwise-separable convs in the blocks.
        expand_ratio: CSP branch width factor.
        arch_ovewrite: a stage table replacing ``arch`` (MMDetection's spelling).
        spp_kernel_sizes: max-pool sizes of the SPP bottleneck.
        channel_attention: gate each CSP layer's concat.
        conv_cfg, norm_cfg, act_cfg: of every ConvModule.
    """

    def __init__(
        self,
        arch: str = 'P5',
        deepen_factor: float = 1.0,
        widen_factor: float = 1.0,
        out_indices: tuple = (2, 3, 4),
        frozen_stages: int = -1,
        use_depthwise: bool = False,
        expand_ratio: float = 0.5,
        arch_ovewrite: list | None = None,
        spp_kernel_sizes: tuple = (5, 9, 13),
        channel_attention: bool = True,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        norm_eval: bool = False,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        if arch not in ARCH_SETTINGS and arch_ovewrite is None:
            raise ConfigError(f'CSPNeXt arch must be one of {sorted(ARCH_SETTINGS)}, got {arch!r}')
        settings = arch_ovewrite or ARCH_SETTINGS[arch]
        if not set(out_indices) <= set(range(len(settings) + 1)):
            raise ConfigError(f'CSPNeXt out_indices {out_indices} outside 0..{len(settings)}')
        self.out_indices = tuple(out_indices)
        norm_cfg = norm_cfg or dict(type='BN', momentum=0.03, eps=0.001)
        act_cfg = act_cfg or dict(type='SiLU')
        common = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        stem = int(settings[0][0] * widen_factor)
        self.stem = nn.Sequential(
            ConvModule(3, stem // 2, 3, stride=2, padding=1, **common),
            ConvModule(stem // 2, stem // 2, 3, padding=1, **common),
            ConvModule(stem // 2, stem, 3, padding=1, **common),
        )
        self.layers = ['stem']
        for i, (in_ch, out_ch, blocks, add_identity, use_spp) in enumerate(settings):
            in_ch, out_ch = int(in_ch * widen_factor), int(out_ch * widen_factor)
            stage = [ConvModule(in_ch, out_ch, 3, stride=2, padding=1, **common)]
            if use_spp:
                stage.append(SPPBottleneck(out_ch, out_ch, spp_kernel_sizes, **common))
            stage.append(
                CSPLayer(
                    out_ch,
                    out_ch,
                    expand_ratio=expand_ratio,
                    num_blocks=max(round(blocks * deepen_factor), 1),
                    add_identity=add_identity,
                    use_depthwise=use_depthwise,
                    use_cspnext_block=True,
                    channel_attention=channel_attention,
                    **common,
                )
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
