"""Feature Pyramid Network (MMDetection's ``FPN``), children ``lateral_convs`` and ``fpn_convs``."""

import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule

_EXTRA_SOURCES = ('on_input', 'on_lateral', 'on_output')


@MODELS.register_module()
class FPN(nn.Module):
    """Top-down pathway with lateral 1x1 convs and 3x3 output convs.

    Args:
        in_channels: channels of each backbone level.
        out_channels: channels of every output level.
        num_outs: number of output levels; levels beyond the backbone's come from extra stride-2
            convs (``add_extra_convs``) or from ``max_pool2d(kernel 1, stride 2)`` of the last one.
        start_level, end_level: the backbone levels used (``end_level=-1``: up to the last).
        add_extra_convs: False, True (= ``'on_input'``), ``'on_input'`` (the first extra conv reads
            the last used backbone level), ``'on_lateral'`` (its lateral) or ``'on_output'`` (its
            FPN output).
        relu_before_extra_convs: ReLU on the input of the second and later extra convs.
        no_norm_on_lateral: no norm in the lateral convs even when ``norm_cfg`` is set.
        conv_cfg, norm_cfg, act_cfg: for every ConvModule.
        upsample_cfg: ``F.interpolate`` arguments (default nearest); without ``scale_factor``
            the upsampled map takes the size of the level below, so odd input sizes work.
        init_cfg: ignored (weights come from checkpoints).

    Input: a sequence of ``[B, in_channels[i], H_i, W_i]``; output: tuple of ``num_outs`` maps
    ``[B, out_channels, H_j, W_j]``.
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        num_outs: int,
        start_level: int = 0,
        end_level: int = -1,
        add_extra_convs: bool | str = False,
        relu_before_extra_convs: bool = False,
        no_norm_on_lateral: bool = False,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        upsample_cfg: dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.no_norm_on_lateral = no_norm_on_lateral
        self.upsample_cfg = dict(upsample_cfg or dict(mode='nearest'))
        if end_level in (-1, self.num_ins - 1):
            self.backbone_end_level = self.num_ins
            if num_outs < self.num_ins - start_level:
                raise ConfigError(
                    f'FPN num_outs={num_outs} is smaller than the '
                    f'{self.num_ins - start_level} backbone levels used'
                )
        else:
            self.backbone_end_level = end_level + 1
            if end_level >= self.num_ins or num_outs != end_level - start_level + 1:
                raise ConfigError(
                    f'FPN end_level={end_level} does not fit {self.num_ins} inputs '
                    f'and num_outs={num_outs}'
                )
        self.start_level = start_level
        self.end_level = end_level
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        elif isinstance(add_extra_convs, str) and add_extra_convs not in _EXTRA_SOURCES:
            raise ConfigError(
                f'FPN add_extra_convs must be a bool or one of {_EXTRA_SOURCES}, '
                f'got {add_extra_convs!r}'
            )
        self.add_extra_convs = add_extra_convs

        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(start_level, self.backbone_end_level):
            self.lateral_convs.append(
                ConvModule(
                    in_channels[i],
                    out_channels,
                    1,
                    conv_cfg=conv_cfg,
                    norm_cfg=None if no_norm_on_lateral else norm_cfg,
                    act_cfg=act_cfg,
                    inplace=False,
                )
            )
            self.fpn_convs.append(
                ConvModule(
                    out_channels,
                    out_channels,
                    3,
                    padding=1,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                    inplace=False,
                )
            )
        extra_levels = num_outs - self.backbone_end_level + start_level
        if add_extra_convs:
            for i in range(extra_levels):
                if i == 0 and add_extra_convs == 'on_input':
                    channels = in_channels[self.backbone_end_level - 1]
                else:
                    channels = out_channels
                self.fpn_convs.append(
                    ConvModule(
                        channels,
                        out_channels,
                        3,
                        stride=2,
                        padding=1,
                        conv_cfg=conv_cfg,
                        norm_cfg=norm_cfg,
                        act_cfg=act_cfg,
                        inplace=False,
                    )
                )

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if len(inputs) != self.num_ins:
            raise ValueError(f'FPN expects {self.num_ins} inputs, got {len(inputs)}')
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        used_levels = len(laterals)
        for i in range(used_levels - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                upsampled = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                upsampled = F.interpolate(
                    laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg
                )
            laterals[i - 1] = laterals[i - 1] + upsampled
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used_levels)]
        if self.num_outs > used_levels:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - used_levels):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == 'on_input':
                    source = inputs[self.backbone_end_level - 1]
                elif self.add_extra_convs == 'on_lateral':
                    source = laterals[-1]
                else:
                    source = outs[-1]
                outs.append(self.fpn_convs[used_levels](source))
                for i in range(used_levels + 1, self.num_outs):
                    prev = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](prev))
        return tuple(outs)
