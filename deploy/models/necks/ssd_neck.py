"""SSD's extra layers (MMDetection's ``SSDNeck``): L2-normalised first level plus extra levels.

Children ``l2_norm.weight`` and ``extra_layers.{i}.{0,1}`` (each a ``Sequential`` of a 1x1
ConvModule halving the level's channels and a 3x3 ConvModule with the level's stride/padding).
"""

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule


class L2Norm(nn.Module):
    """Per-pixel L2 normalisation over channels times a learnt per-channel ``weight``.

    Args:
        n_dims: channels.
        scale: the initial weight (checkpoints overwrite it).
        eps: added to the norm.
    """

    def __init__(self, n_dims: int, scale: float = 20.0, eps: float = 1e-10):
        super().__init__()
        self.n_dims = n_dims
        self.weight = nn.Parameter(torch.full((n_dims,), float(scale)))
        self.eps = eps
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        x_float = x.float()
        norm = x_float.pow(2).sum(1, keepdim=True).sqrt() + self.eps
        return (self.weight[None, :, None, None].float() * x_float / norm).type_as(x)


@MODELS.register_module()
class SSDNeck(nn.Module):
    """Extra feature levels for SSD.

    Args:
        in_channels: channels of the backbone outputs, e.g. ``(512, 1024)``.
        out_channels: channels of every output level; starts with ``in_channels``.
        level_strides, level_paddings: of each extra level's 3x3 conv.
        l2_norm_scale: initial scale of the L2 norm on the first level (None: no L2 norm).
        last_kernel_size: kernel of the last extra level's second conv.
        use_depthwise: SSD-Lite; not supported.
        conv_cfg, norm_cfg, act_cfg: of the extra ConvModules (ReLU by default).
        init_cfg: ignored (weights come from checkpoints).
    """

    def __init__(
        self,
        in_channels: tuple,
        out_channels: tuple,
        level_strides: tuple,
        level_paddings: tuple,
        l2_norm_scale: float | None = 20.0,
        last_kernel_size: int = 3,
        use_depthwise: bool = False,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        in_channels, out_channels = list(in_channels), list(out_channels)
        extra_channels = out_channels[len(in_channels) :]
        if use_depthwise:
            raise ConfigError('SSDNeck: use_depthwise (SSD-Lite) is not supported')
        if out_channels[: len(in_channels)] != in_channels or not extra_channels:
            raise ConfigError(
                f'SSDNeck: out_channels {out_channels} must start with in_channels {in_channels} '
                'and add levels'
            )
        if not len(extra_channels) == len(level_strides) == len(level_paddings):
            raise ConfigError('SSDNeck: one stride and padding per extra level is needed')
        act_cfg = act_cfg or dict(type='ReLU')
        if l2_norm_scale:
            self.l2_norm = L2Norm(in_channels[0], l2_norm_scale)
        self.extra_layers = nn.ModuleList()
        previous = in_channels[-1]
        for i, (channels, stride, padding) in enumerate(
            zip(extra_channels, level_strides, level_paddings)
        ):
            kernel_size = last_kernel_size if i == len(extra_channels) - 1 else 3
            cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
            self.extra_layers.append(
                nn.Sequential(
                    ConvModule(previous, channels // 2, 1, **cfg),
                    ConvModule(
                        channels // 2, channels, kernel_size, stride=stride, padding=padding, **cfg
                    ),
                )
            )
            previous = channels

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        outs = list(inputs)
        if hasattr(self, 'l2_norm'):
            outs[0] = self.l2_norm(outs[0])
        feat = outs[-1]
        for layer in self.extra_layers:
            feat = layer(feat)
            outs.append(feat)
        return tuple(outs)
