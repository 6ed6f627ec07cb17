"""Darknet-53 (MMDetection's ``Darknet``), the YOLOv3 backbone.

Children ``conv1`` (3x3, 32 channels) and ``conv_res_block{1..5}``, each a ``Sequential`` of a
stride-2 3x3 ``conv`` and ``res{0..n-1}`` residual blocks (``conv1`` 1x1 halving the channels,
``conv2`` 3x3 restoring them), with n = 1, 2, 8, 8, 4. Every conv is a ConvModule with BN and
LeakyReLU(0.1).
"""

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule


class ResBlock(nn.Module):
    """``x + conv2(conv1(x))``: 1x1 to ``in_channels / 2``, then 3x3 back to ``in_channels``."""

    def __init__(
        self,
        in_channels: int,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
    ):
        super().__init__()
        if in_channels % 2:
            raise ConfigError(f'Darknet ResBlock needs even in_channels, got {in_channels}')
        cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv1 = ConvModule(in_channels, in_channels // 2, 1, **cfg)
        self.conv2 = ConvModule(in_channels // 2, in_channels, 3, padding=1, **cfg)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


@MODELS.register_module()
class Darknet(nn.Module):
    """Darknet backbone with MMDetection's arguments and checkpoint names.

    Args:
        depth: 53 (the only architecture).
        out_indices: indices into ``('conv1', 'conv_res_block1', ..., 'conv_res_block5')`` whose
            outputs are returned (YOLOv3: 3, 4, 5 = strides 8, 16, 32).
        frozen_stages: stages ``0..frozen_stages`` get no gradients (-1: none).
        conv_cfg, norm_cfg, act_cfg: of every ConvModule (BN, LeakyReLU(0.1) by default).
        norm_eval: keep BatchNorm layers in eval mode when :meth:`train` is called.
        base_channels: ours, not MMDetection's: channels of ``conv1`` (32), doubling per stage.
            Other values only serve narrow test models.
        pretrained, init_cfg: accepted and ignored (weights come from checkpoints).
    """

    # depth -> (residual blocks per stage, (in, out) channels per stage in units of conv1's)
    arch_settings = {53: ((1, 2, 8, 8, 4), ((1, 2), (2, 4), (4, 8), (8, 16), (16, 32)))}

    def __init__(
        self,
        depth: int = 53,
        out_indices: tuple = (3, 4, 5),
        frozen_stages: int = -1,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        norm_eval: bool = True,
        base_channels: int = 32,
        pretrained: str | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        if depth not in self.arch_settings:
            raise ConfigError(
                f'invalid Darknet depth {depth}: use one of {sorted(self.arch_settings)}'
            )
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        cfg = dict(
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg or dict(type='BN', requires_grad=True),
            act_cfg=act_cfg or dict(type='LeakyReLU', negative_slope=0.1),
        )
        self.layers, units = self.arch_settings[depth]
        self.channels = tuple((a * base_channels, b * base_channels) for a, b in units)
        self.conv1 = ConvModule(3, base_channels, 3, padding=1, **cfg)
        self.cr_blocks = ['conv1']
        for i, num_res in enumerate(self.layers):
            name = f'conv_res_block{i + 1}'
            self.add_module(name, self.make_conv_res_block(*self.channels[i], num_res, **cfg))
            self.cr_blocks.append(name)
        self._freeze_stages()

    @staticmethod
    def make_conv_res_block(
        in_channels: int,
        out_channels: int,
        res_repeat: int,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
    ) -> nn.Sequential:
        """A stride-2 3x3 ``conv`` then ``res_repeat`` :class:`ResBlock` s (``res{i}``)."""
        cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        block = nn.Sequential()
        block.add_module(
            'conv', ConvModule(in_channels, out_channels, 3, stride=2, padding=1, **cfg)
        )
        for i in range(res_repeat):
            block.add_module(f'res{i}', ResBlock(out_channels, **cfg))
        return block

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages + 1):
            stage = getattr(self, self.cr_blocks[i])
            stage.eval()
            for param in stage.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'Darknet':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """``[B, 3, H, W]`` -> the ``out_indices`` stage outputs (strides 1, 2, 4, 8, 16, 32)."""
        outs = []
        for i, name in enumerate(self.cr_blocks):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
