"""ResNet (MMDetection's ``ResNet``) with the module names of MMDetection checkpoints.

Stem ``conv1``/``bn1`` (or ``stem.*`` with ``deep_stem``), stages ``layer1..layerN`` of
``BasicBlock`` (depth 18/34) or ``Bottleneck`` (50/101/152) blocks with ``conv{k}``/``bn{k}`` and
``downsample.0`` (1x1 conv) / ``downsample.1`` (norm) on the first block of a stage.
"""

import torch.utils.checkpoint as cp
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import build_conv_layer, build_norm_layer


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``expansion = 1``."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        style: str = 'pytorch',
        with_cp: bool = False,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
    ):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN')
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        self.conv1 = build_conv_layer(
            conv_cfg,
            inplanes,
            planes,
            3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            bias=False,
        )
        self.add_module(self.norm1_name, norm1)
        self.conv2 = build_conv_layer(conv_cfg, planes, planes, 3, padding=1, bias=False)
        self.add_module(self.norm2_name, norm2)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.with_cp = with_cp

    @property
    def last_norm(self) -> nn.Module:
        return getattr(self, self.norm2_name)

    def _residual(self, x: Tensor) -> Tensor:
        out = self.relu(getattr(self, self.norm1_name)(self.conv1(x)))
        out = getattr(self, self.norm2_name)(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(self._residual, x, use_reentrant=False)
        else:
            out = self._residual(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convs; ``expansion = 4``.

    ``style='pytorch'`` puts the stride on the 3x3 ``conv2``, ``'caffe'`` on the 1x1 ``conv1``.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        style: str = 'pytorch',
        with_cp: bool = False,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
    ):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN')
        if style not in ('pytorch', 'caffe'):
            raise ConfigError(f"ResNet style must be 'pytorch' or 'caffe', got {style!r}")
        self.conv1_stride, self.conv2_stride = (1, stride) if style == 'pytorch' else (stride, 1)
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        self.norm3_name, norm3 = build_norm_layer(norm_cfg, planes * self.expansion, postfix=3)
        self.conv1 = build_conv_layer(
            conv_cfg, inplanes, planes, 1, stride=self.conv1_stride, bias=False
        )
        self.add_module(self.norm1_name, norm1)
        self.conv2 = build_conv_layer(
            conv_cfg,
            planes,
            planes,
            3,
            stride=self.conv2_stride,
            padding=dilation,
            dilation=dilation,
            bias=False,
        )
        self.add_module(self.norm2_name, norm2)
        self.conv3 = build_conv_layer(conv_cfg, planes, planes * self.expansion, 1, bias=False)
        self.add_module(self.norm3_name, norm3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.with_cp = with_cp

    @property
    def last_norm(self) -> nn.Module:
        return getattr(self, self.norm3_name)

    def _residual(self, x: Tensor) -> Tensor:
        out = self.relu(getattr(self, self.norm1_name)(self.conv1(x)))
        out = self.relu(getattr(self, self.norm2_name)(self.conv2(out)))
        out = getattr(self, self.norm3_name)(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(self._residual, x, use_reentrant=False)
        else:
            out = self._residual(x)
        return self.relu(out)


class ResLayer(nn.Sequential):
    """One stage: ``num_blocks`` blocks, the first one strided and with a ``downsample`` branch."""

    def __init__(
        self,
        block: type[nn.Module],
        inplanes: int,
        planes: int,
        num_blocks: int,
        stride: int = 1,
        dilation: int = 1,
        avg_down: bool = False,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        **block_kwargs,
    ):
        norm_cfg = norm_cfg or dict(type='BN')
        downsample = None
        out_planes = planes * block.expansion
        if stride != 1 or inplanes != out_planes:
            layers: list[nn.Module] = []
            conv_stride = stride
            if avg_down and stride != 1:
                conv_stride = 1
                layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
            layers.append(
                build_conv_layer(conv_cfg, inplanes, out_planes, 1, stride=conv_stride, bias=False)
            )
            layers.append(build_norm_layer(norm_cfg, out_planes)[1])
            downsample = nn.Sequential(*layers)
        blocks = [
            block(
                inplanes,
                planes,
                stride=stride,
                dilation=dilation,
                downsample=downsample,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                **block_kwargs,
            )
        ]
        blocks += [
            block(
                out_planes,
                planes,
                stride=1,
                dilation=dilation,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                **block_kwargs,
            )
            for _ in range(1, num_blocks)
        ]
        super().__init__(*blocks)


@MODELS.register_module()
class ResNet(nn.Module):
    """ResNet backbone with MMDetection's arguments and checkpoint names.

    Args:
        depth: 18, 34, 50, 101 or 152.
        in_channels: input image channels.
        stem_channels: stem output channels (default ``base_channels``).
        base_channels: channels of the first stage's 3x3 convs (doubling per stage).
        num_stages: 1 to 4.
        strides, dilations: per stage.
        out_indices: stages whose outputs :meth:`forward` returns (0-based).
        style: ``'pytorch'`` (stride on the 3x3 conv) or ``'caffe'`` (stride on the first 1x1).
        deep_stem: three 3x3 convs (``stem.*``) instead of one 7x7 conv (ResNetV1d).
        avg_down: average-pool before the 1x1 downsample conv (ResNetV1d).
        frozen_stages: stem and stages ``1..frozen_stages`` are frozen (no grad, eval mode);
            -1 freezes nothing, 0 only the stem.
        conv_cfg, norm_cfg: layer configs (default norm: ``dict(type='BN', requires_grad=True)``;
            ``requires_grad=False`` freezes every norm's affine parameters, as in MMDetection).
        norm_eval: keep BatchNorm layers in eval mode when :meth:`train` is called.
        with_cp: gradient checkpointing of each block while training.
        zero_init_residual: zero the last norm's weight of every block.
        dcn, stage_with_dcn, plugins: only their "off" values are supported.
        pretrained, init_cfg: accepted and ignored: weights always come from a full detector
            checkpoint loaded afterwards, so we never download backbone weights here.

    Input ``[B, in_channels, H, W]``; output: a tuple with one ``[B, C_i, H / s_i, W / s_i]`` map
    per ``out_indices`` entry (``C_i = base_channels * 2**i * expansion``).
    """

    arch_settings = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(
        self,
        depth: int,
        in_channels: int = 3,
        stem_channels: int | None = None,
        base_channels: int = 64,
        num_stages: int = 4,
        strides: tuple = (1, 2, 2, 2),
        dilations: tuple = (1, 1, 1, 1),
        out_indices: tuple = (0, 1, 2, 3),
        style: str = 'pytorch',
        deep_stem: bool = False,
        avg_down: bool = False,
        frozen_stages: int = -1,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        norm_eval: bool = True,
        dcn: dict | None = None,
        stage_with_dcn: tuple = (False, False, False, False),
        plugins: list | None = None,
        with_cp: bool = False,
        zero_init_residual: bool = True,
        pretrained: str | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN', requires_grad=True)
        if depth not in self.arch_settings:
            raise ConfigError(
                f'invalid ResNet depth {depth}: use one of {sorted(self.arch_settings)}'
            )
        if not 1 <= num_stages <= 4:
            raise ConfigError(f'ResNet num_stages must be 1..4, got {num_stages}')
        if len(strides) < num_stages or len(dilations) < num_stages:
            raise ConfigError('ResNet strides and dilations need one entry per stage')
        if max(out_indices) >= num_stages:
            raise ConfigError(f'ResNet out_indices {out_indices} exceed num_stages {num_stages}')
        if dcn is not None or any(stage_with_dcn) or plugins:
            raise ConfigError('ResNet with dcn or plugins is not supported')
        if style not in ('pytorch', 'caffe'):
            raise ConfigError(f"ResNet style must be 'pytorch' or 'caffe', got {style!r}")
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.style = style
        self.deep_stem = deep_stem
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        stem_channels = base_channels if stem_channels is None else stem_channels
        self.block, stage_blocks = self.arch_settings[depth]
        self.stage_blocks = stage_blocks[:num_stages]

        self._make_stem(in_channels, stem_channels, conv_cfg, norm_cfg)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res_layers = []
        inplanes = stem_channels
        for i, num_blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2**i
            layer = ResLayer(
                self.block,
                inplanes,
                planes,
                num_blocks,
                stride=strides[i],
                dilation=dilations[i],
                avg_down=avg_down,
                style=style,
                with_cp=with_cp,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
            )
            inplanes = planes * self.block.expansion
            name = f'layer{i + 1}'
            self.add_module(name, layer)
            self.res_layers.append(name)
        self.feat_dim = inplanes

        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_norm.weight)
        self._freeze_stages()

    def _make_stem(
        self, in_channels: int, stem_channels: int, conv_cfg: dict | None, norm_cfg: dict
    ) -> None:
        if self.deep_stem:
            half = stem_channels // 2
            layers: list[nn.Module] = []
            for cin, cout, stride in (
                (in_channels, half, 2),
                (half, half, 1),
                (half, stem_channels, 1),
            ):
                layers += [
                    build_conv_layer(conv_cfg, cin, cout, 3, stride=stride, padding=1, bias=False),
                    build_norm_layer(norm_cfg, cout)[1],
                    nn.ReLU(inplace=True),
                ]
            self.stem = nn.Sequential(*layers)
        else:
            self.conv1 = build_conv_layer(
                conv_cfg, in_channels, stem_channels, 7, stride=2, padding=3, bias=False
            )
            self.norm1_name, norm1 = build_norm_layer(norm_cfg, stem_channels, postfix=1)
            self.add_module(self.norm1_name, norm1)
            self.relu = nn.ReLU(inplace=True)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        stem = [self.stem] if self.deep_stem else [self.conv1, getattr(self, self.norm1_name)]
        stages = [getattr(self, f'layer{i}') for i in range(1, self.frozen_stages + 1)]
        for module in stem + stages:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'ResNet':
        """Switch mode, keeping frozen stages (and with ``norm_eval`` every BatchNorm) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(getattr(self, self.norm1_name)(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
