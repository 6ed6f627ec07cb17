"""MMCV's ``ConvModule``: conv, norm, activation under the child names checkpoints use."""

from collections.abc import Mapping
from types import MappingProxyType

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from .norm import INPLACE_ACTIVATIONS, build_activation_layer, build_conv_layer, build_norm_layer

# read-only default: ``act_cfg=None`` means no activation, so None cannot stand for ReLU
_RELU = MappingProxyType({'type': 'ReLU'})


@MODELS.register_module()
class ConvModule(nn.Module):
    """Conv + optional norm + optional activation, with children ``conv``, ``bn``/``gn``/``ln`` and
    ``activate`` as in MMCV, so ``lateral_convs.0.conv.weight`` style keys load unchanged.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: of the conv.
        bias: ``'auto'`` gives the conv a bias only when there is no norm.
        conv_cfg: conv type (None = ``Conv2d``; ``Conv1d`` for point heads).
        norm_cfg: norm config or None.
        act_cfg: activation config or None (no ``activate`` child then).
        inplace: default ``inplace`` for activations that accept it.
        order: the order of ``'conv'``, ``'norm'``, ``'act'``.
        padding_mode: the conv's padding mode (``'zeros'``, ``'reflect'``, ...).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple,
        stride: int | tuple = 1,
        padding: int | tuple = 0,
        dilation: int | tuple = 1,
        groups: int = 1,
        bias: bool | str = 'auto',
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: Mapping | None = _RELU,
        inplace: bool = True,
        order: tuple = ('conv', 'norm', 'act'),
        padding_mode: str = 'zeros',
    ):
        super().__init__()
        order = tuple(order)
        if len(order) != 3 or set(order) != {'conv', 'norm', 'act'}:
            raise ConfigError(f'ConvModule order must be a permutation of conv/norm/act: {order}')
        self.order = order
        self.with_norm = norm_cfg is not None
        self.with_activation = act_cfg is not None
        if bias == 'auto':
            bias = not self.with_norm
        self.with_bias = bias
        self.conv = build_conv_layer(
            conv_cfg,
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm_name = None
        if self.with_norm:
            norm_channels = (
                out_channels if order.index('norm') > order.index('conv') else in_channels
            )
            self.norm_name, norm = build_norm_layer(norm_cfg, norm_channels)
            self.add_module(self.norm_name, norm)
        if self.with_activation:
            act_cfg = dict(act_cfg)
            if act_cfg['type'] in INPLACE_ACTIVATIONS:
                act_cfg.setdefault('inplace', inplace)
            self.activate = build_activation_layer(act_cfg)
        self._init_weights()

    @property
    def norm(self) -> nn.Module | None:
        return getattr(self, self.norm_name) if self.norm_name else None

    def _init_weights(self) -> None:
        # MMCV's default init; checkpoints overwrite it, but fresh models start sensibly.
        act_type = self.activate.__class__.__name__ if self.with_activation else ''
        if act_type == 'LeakyReLU':
            nn.init.kaiming_normal_(
                self.conv.weight,
                a=self.activate.negative_slope,
                mode='fan_out',
                nonlinearity='leaky_relu',
            )
        else:
            nn.init.kaiming_normal_(self.conv.weight, mode='fan_out', nonlinearity='relu')
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        norm = self.norm
        if norm is not None and getattr(norm, 'weight', None) is not None:
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)

    def forward(self, x: Tensor, activate: bool = True, norm: bool = True) -> Tensor:
        for layer in self.order:
            if layer == 'conv':
                x = self.conv(x)
            elif layer == 'norm' and norm and self.with_norm:
                x = self.norm(x)
            elif layer == 'act' and activate and self.with_activation:
                x = self.activate(x)
        return x
