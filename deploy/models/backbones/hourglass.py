"""HourglassNet (MMDetection's ``HourglassNet``, CornerNet's Hourglass-104), checkpoint names kept.

Layout (Hourglass-104: ``num_stacks=2``, ``downsample_times=5``)::

    stem:  ConvModule 7x7 s2 (3 -> C/2) -> ResLayer of one BasicBlock s2 (C/2 -> C)   [stride 4]
    for each stack s:
        hourglass_modules[s]: recursive encoder-decoder (below), C channels in and out
        out_convs[s]: ConvModule 3x3 -> one output feature map per stack
        between stacks: x = inters[s](relu(conv1x1s[s](x) + remap_convs[s](out_s)))

    HourglassModule(depth, channels c0, c1, ..., blocks n0, n1, ...):
        up1  = ResLayer(n0 blocks, c0 -> c0)(x)
        low1 = ResLayer(n0 blocks, c0 -> c1, first block stride 2)(x)
        low2 = HourglassModule(depth - 1, c1, ...)(low1), or ResLayer(n1 blocks, c1) at depth 1
        low3 = ResLayer(n0 blocks, c1 -> c0, the *last* block changes the width)(low2)
        out  = up1 + nearest-upsample(low3 to up1's size)

Every block is a ResNet ``BasicBlock``. The detector uses every stack's output for training
(intermediate supervision) and the last one at test time.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule, build_conv_layer, build_norm_layer
from .resnet import BasicBlock, ResLayer


def downsample_last_layer(
    inplanes: int, planes: int, num_blocks: int, norm_cfg: dict | None
) -> nn.Sequential:
    """MMDetection's ``ResLayer(..., downsample_first=False)``: ``num_blocks - 1`` blocks at
    ``inplanes``, then one block ``inplanes -> planes`` with the 1x1 projection (when the widths
    differ)."""
    norm_cfg = norm_cfg or dict(type='BN')
    downsample = None
    if inplanes != planes:
        downsample = nn.Sequential(
            build_conv_layer(None, inplanes, planes, 1, stride=1, bias=False),
            build_norm_layer(norm_cfg, planes)[1],
        )
    blocks = [BasicBlock(inplanes, inplanes, norm_cfg=norm_cfg) for _ in range(num_blocks - 1)]
    blocks.append(BasicBlock(inplanes, planes, downsample=downsample, norm_cfg=norm_cfg))
    return nn.Sequential(*blocks)


class HourglassModule(nn.Module):
    """One recursive hourglass (see the module docstring).

    Args:
        depth: recursion depth (downsamplings inside this module).
        stage_channels: channels of this level and the deeper ones.
        stage_blocks: BasicBlocks per ResLayer of this level and the deeper ones.
        norm_cfg: norm of this level's layers (MMDetection builds the deeper levels with its
            default, ``BN``, whatever is passed here).
        upsample_cfg: ``F.interpolate`` arguments; without ``scale_factor`` the deeper output is
            resized to exactly ``up1``'s size (odd sizes work).
    """

    def __init__(
        self,
        depth: int,
        stage_channels: list[int],
        stage_blocks: list[int],
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
        upsample_cfg: dict | None = None,
    ):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN', requires_grad=True)
        self.depth = depth
        cur_block, next_block = stage_blocks[0], stage_blocks[1]
        cur_channel, next_channel = stage_channels[0], stage_channels[1]
        self.up1 = ResLayer(BasicBlock, cur_channel, cur_channel, cur_block, norm_cfg=norm_cfg)
        self.low1 = ResLayer(
            BasicBlock, cur_channel, next_channel, cur_block, stride=2, norm_cfg=norm_cfg
        )
        if depth > 1:
            self.low2 = HourglassModule(depth - 1, stage_channels[1:], stage_blocks[1:])
        else:
            self.low2 = ResLayer(
                BasicBlock, next_channel, next_channel, next_block, norm_cfg=norm_cfg
            )
        self.low3 = downsample_last_layer(next_channel, cur_channel, cur_block, norm_cfg)
        self.upsample_cfg = dict(upsample_cfg or dict(mode='nearest'))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, c0, H, W]`` -> ``[B, c0, H, W]``."""
        up1 = self.up1(x)
        low3 = self.low3(self.low2(self.low1(x)))
        if 'scale_factor' in self.upsample_cfg:
            up2 = F.interpolate(low3, **self.upsample_cfg)
        else:
            up2 = F.interpolate(low3, size=up1.shape[2:], **self.upsample_cfg)
        return up1 + up2


@MODELS.register_module()
class HourglassNet(nn.Module):
    """Stacked hourglass backbone (Newell et al., 2016; Hourglass-104 for CornerNet).

    Args:
        downsample_times: downsamplings inside each hourglass (its recursion depth).
        num_stacks: hourglasses in a row (2: Hourglass-104, 1: Hourglass-52).
        stage_channels, stage_blocks: per hourglass level (``downsample_times + 1`` or more).
        feat_channel: channels of each stack's output feature map.
        norm_cfg: norm config of the layers.
        pretrained, init_cfg: accepted and ignored (weights come from checkpoints).
    """

    def __init__(
        self,
        downsample_times: int = 5,
        num_stacks: int = 2,
        stage_channels: list[int] = (256, 256, 384, 384, 384, 512),
        stage_blocks: list[int] = (2, 2, 2, 2, 2, 4),
        feat_channel: int = 256,
        norm_cfg: dict | None = None,
        pretrained: str | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN', requires_grad=True)
        stage_channels, stage_blocks = list(stage_channels), list(stage_blocks)
        if num_stacks < 1:
            raise ConfigError(f'HourglassNet: num_stacks must be at least 1, got {num_stacks}')
        if len(stage_channels) != len(stage_blocks):
            raise ConfigError('HourglassNet: stage_channels and stage_blocks differ in length')
        if len(stage_channels) <= downsample_times:
            raise ConfigError(
                f'HourglassNet: downsample_times={downsample_times} needs more than that many '
                f'stages, got {len(stage_channels)}'
            )
        self.num_stacks = num_stacks
        channels = stage_channels[0]
        self.stem = nn.Sequential(
            ConvModule(3, channels // 2, 7, padding=3, stride=2, norm_cfg=norm_cfg),
            ResLayer(BasicBlock, channels // 2, channels, 1, stride=2, norm_cfg=norm_cfg),
        )
        self.hourglass_modules = nn.ModuleList(
            HourglassModule(downsample_times, stage_channels, stage_blocks)
            for _ in range(num_stacks)
        )
        # MMDetection always builds at least one ``inters`` block (unused by a single stack).
        self.inters = ResLayer(BasicBlock, channels, channels, num_stacks - 1, norm_cfg=norm_cfg)
        self.conv1x1s = nn.ModuleList(
            ConvModule(channels, channels, 1, norm_cfg=norm_cfg, act_cfg=None)
            for _ in range(num_stacks - 1)
        )
        self.out_convs = nn.ModuleList(
            ConvModule(channels, feat_channel, 3, padding=1, norm_cfg=norm_cfg)
            for _ in range(num_stacks)
        )
        self.remap_convs = nn.ModuleList(
            ConvModule(feat_channel, channels, 1, norm_cfg=norm_cfg, act_cfg=None)
            for _ in range(num_stacks - 1)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x [B, 3, H, W]`` -> one ``[B, feat_channel, ~H/4, ~W/4]`` map per stack."""
        inter_feat = self.stem(x)
        out_feats = []
        for ind in range(self.num_stacks):
            out_feat = self.out_convs[ind](self.hourglass_modules[ind](inter_feat))
            out_feats.append(out_feat)
            if ind < self.num_stacks - 1:
                inter_feat = self.conv1x1s[ind](inter_feat) + self.remap_convs[ind](out_feat)
                inter_feat = self.inters[ind](self.relu(inter_feat))
        return out_feats
