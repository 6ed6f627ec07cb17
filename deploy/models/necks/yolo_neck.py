"""YOLOv3's neck (MMDetection's ``YOLOV3Neck``): detection blocks, top-down with 2x upsampling.

Children ``detect1``, then per finer level ``conv{i}`` (1x1 lateral) and ``detect{i+1}``; each
``DetectionBlock`` is five ConvModules ``conv1..conv5`` (1x1, 3x3, 1x1, 3x3, 1x1).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule


class DetectionBlock(nn.Module):
    """1x1 (``out``) -> 3x3 (``2 * out``) -> 1x1 -> 3x3 -> 1x1 (``out``)."""

    def __init__(self, in_channels: int, out_channels: int, **cfg):
        super().__init__()
        double = out_channels * 2
        self.conv1 = ConvModule(in_channels, out_channels, 1, **cfg)
        self.conv2 = ConvModule(out_channels, double, 3, padding=1, **cfg)
        self.conv3 = ConvModule(double, out_channels, 1, **cfg)
        self.conv4 = ConvModule(out_channels, double, 3, padding=1, **cfg)
        self.conv5 = ConvModule(double, out_channels, 1, **cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))


@MODELS.register_module()
class YOLOV3Neck(nn.Module):
    """Args:
        num_scales: number of levels.
        in_channels: backbone channels, coarsest first (e.g. ``[1024, 512, 256]``).
        out_channels: output channels per level, coarsest first.
        conv_cfg, norm_cfg, act_cfg: of every ConvModule (BN, LeakyReLU(0.1) by default).
        init_cfg: ignored.

    Input: backbone levels finest first (strides 8, 16, 32); output: coarsest first.
    """

    def __init__(
        self,
        num_scales: int,
        in_channels: list[int],
        out_channels: list[int],
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        if not num_scales == len(in_channels) == len(out_channels):
            raise ConfigError('YOLOV3Neck: in_channels and out_channels need num_scales entries')
        self.num_scales = num_scales
        self.in_channels = list(in_channels)
        self.out_channels = list(out_channels)
        cfg = dict(
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg or dict(type='BN', requires_grad=True),
            act_cfg=act_cfg or dict(type='LeakyReLU', negative_slope=0.1),
        )
        self.detect1 = DetectionBlock(in_channels[0], out_channels[0], **cfg)
        for i in range(1, num_scales):
            self.add_module(f'conv{i}', ConvModule(out_channels[i - 1], out_channels[i], 1, **cfg))
            # the upsampled coarser level is concatenated with the backbone level
            self.add_module(
                f'detect{i + 1}',
                DetectionBlock(in_channels[i] + out_channels[i], out_channels[i], **cfg),
            )

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if len(feats) != self.num_scales:
            raise ValueError(f'YOLOV3Neck expects {self.num_scales} levels, got {len(feats)}')
        out = self.detect1(feats[-1])
        outs = [out]
        for i, x in enumerate(reversed(feats[:-1])):
            lateral = getattr(self, f'conv{i + 1}')(out)
            # MMDetection upsamples by scale_factor=2; with inputs padded to 32 that is exactly
            # the finer level's size, and giving the size keeps dynamic export free of guards.
            lateral = F.interpolate(lateral, size=x.shape[2:], mode='nearest')
            out = getattr(self, f'detect{i + 2}')(torch.cat((lateral, x), 1))
            outs.append(out)
        return tuple(outs)
