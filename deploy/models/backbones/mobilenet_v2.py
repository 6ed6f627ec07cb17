"""MobileNetV2 (MMClassification 0.x / MMPretrain 1.x ``MobileNetV2``) with their module names.

Stem ``conv1`` (3x3 stride-2 ``ConvModule``), seven stages ``layer1..layer7`` of
:class:`InvertedResidual` blocks whose convs sit in ``conv.0``, ``conv.1`` (``conv.2``), and the
1x1 ``conv2`` to 1280 channels, so keys read ``backbone.conv1.conv.weight``,
``backbone.layer2.0.conv.1.bn.running_mean``, ``backbone.conv2.conv.weight``. Both generations
build the same modules, so their checkpoints have the same keys and shapes.
"""

from collections.abc import Sequence

import torch.utils.checkpoint as cp
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``min_value``,
    default ``divisor``), never more than 10% below ``value`` (MMPretrain's ``make_divisible``
    with ``min_ratio=0.9``): the channel counts of a widened or narrowed network."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    """Expand (1x1, skipped when ``expand_ratio == 1``) -> depthwise 3x3 -> linear project (1x1,
    no activation), with an identity shortcut when the block keeps stride and channels.

    ``[B, in_channels, H, W]`` -> ``[B, out_channels, H / stride, W / stride]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: float,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        with_cp: bool = False,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f'InvertedResidual stride must be 1 or 2, got {stride}')
        norm_cfg = norm_cfg or dict(type='BN')
        act_cfg = act_cfg or dict(type='ReLU6')
        self.stride = stride
        self.with_cp = with_cp
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = int(round(in_channels * expand_ratio))
        common = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvModule(in_channels, hidden, 1, act_cfg=act_cfg, **common))
        layers += [
            ConvModule(
                hidden,
                hidden,
                3,
                stride=stride,
                padding=1,
                groups=hidden,
                act_cfg=act_cfg,
                **common,
            ),
            ConvModule(hidden, out_channels, 1, act_cfg=None, **common),
        ]
        self.conv = nn.Sequential(*layers)

    def _forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


@MODELS.register_module()
class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018) as MMClassification / MMPretrain build it.

    Args:
        widen_factor: multiplies every stage's channels (rounded by :func:`make_divisible` to
            multiples of 8); ``conv2`` keeps 1280 channels unless the factor is above 1.
        out_indices: which outputs :meth:`forward` returns: 0-6 are ``layer1..layer7``, 7 is
            ``conv2`` (the default, the classifier's input).
        frozen_stages: ``conv1``'s parameters and stages ``layer1..layerN`` are frozen (no grad,
            the stages in eval mode while training); -1 freezes nothing.
        conv_cfg, norm_cfg, act_cfg: layer configs (default ``BN`` and ``ReLU6``).
        norm_eval: keep every BatchNorm in eval mode when :meth:`train` is called.
        with_cp: gradient checkpointing of each block while training.
        init_cfg, pretrained: accepted and ignored (weights come from the classifier's checkpoint).

    Input ``[B, 3, H, W]``; output: a tuple with one map per ``out_indices`` entry, e.g.
    ``[B, 1280, H / 32, W / 32]`` for index 7.
    """

    #: per stage: expand ratio, channels, blocks, stride of the first block
    arch_settings = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(
        self,
        widen_factor: float = 1.0,
        out_indices: Sequence[int] = (7,),
        frozen_stages: int = -1,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        norm_eval: bool = False,
        with_cp: bool = False,
        init_cfg: dict | list | None = None,
        pretrained: str | None = None,
    ):
        super().__init__()
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(8) for i in out_indices):
            raise ConfigError(f'MobileNetV2 out_indices must be in 0..7, got {out_indices}')
        if frozen_stages not in range(-1, 8):
            raise ConfigError(f'MobileNetV2 frozen_stages must be in -1..7, got {frozen_stages}')
        norm_cfg = norm_cfg or dict(type='BN')
        act_cfg = act_cfg or dict(type='ReLU6')
        self.widen_factor = widen_factor
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        channels = make_divisible(32 * widen_factor, 8)
        self.conv1 = ConvModule(
            3,
            channels,
            3,
            stride=2,
            padding=1,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
        )
        self.layers: list[str] = []
        for i, (expand_ratio, width, num_blocks, stride) in enumerate(self.arch_settings):
            out_channels = make_divisible(width * widen_factor, 8)
            blocks = []
            for j in range(num_blocks):
                blocks.append(
                    InvertedResidual(
                        channels,
                        out_channels,
                        stride if j == 0 else 1,
                        expand_ratio,
                        conv_cfg=conv_cfg,
                        norm_cfg=norm_cfg,
                        act_cfg=act_cfg,
                        with_cp=with_cp,
                    )
                )
                channels = out_channels
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
            self.layers.append(f'layer{i + 1}')
        self.out_channel = int(1280 * widen_factor) if widen_factor > 1.0 else 1280
        self.conv2 = ConvModule(
            channels, self.out_channel, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg
        )
        self.layers.append('conv2')
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        # As in MMPretrain: the stem's parameters stop learning, but only the frozen stages are
        # switched to eval mode (the stem's BatchNorm statistics keep updating while training).
        if self.frozen_stages >= 0:
            for param in self.conv1.parameters():
                param.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            layer = getattr(self, f'layer{i}')
            layer.eval()
            for param in layer.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'MobileNetV2':
        """Switch mode, keeping frozen stages (and with ``norm_eval`` every BatchNorm) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.conv1(x)
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
