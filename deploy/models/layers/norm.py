"""Norm, activation and conv builders with MMCV's config types and child names.

``build_norm_layer`` returns the name MMCV would give the module (``bn``, ``gn``, ``ln``, ``in``
plus a postfix), because that name becomes part of every checkpoint key below it.
"""

from collections.abc import Mapping

from torch import nn

from ...errors import ConfigError

# type -> (module class, name abbreviation); SyncBN is plain BatchNorm2d: we only run inference.
_NORM_LAYERS: dict[str, tuple[type[nn.Module], str]] = {
    'BN': (nn.BatchNorm2d, 'bn'),
    'BN1d': (nn.BatchNorm1d, 'bn'),
    'BN2d': (nn.BatchNorm2d, 'bn'),
    'BN3d': (nn.BatchNorm3d, 'bn'),
    'SyncBN': (nn.BatchNorm2d, 'bn'),
    'GN': (nn.GroupNorm, 'gn'),
    'LN': (nn.LayerNorm, 'ln'),
    'IN': (nn.InstanceNorm2d, 'in'),
    'IN1d': (nn.InstanceNorm1d, 'in'),
    'IN2d': (nn.InstanceNorm2d, 'in'),
    'IN3d': (nn.InstanceNorm3d, 'in'),
}

_ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    'ReLU': nn.ReLU,
    'LeakyReLU': nn.LeakyReLU,
    'PReLU': nn.PReLU,
    'RReLU': nn.RReLU,
    'ReLU6': nn.ReLU6,
    'ELU': nn.ELU,
    'Sigmoid': nn.Sigmoid,
    'Tanh': nn.Tanh,
    'GELU': nn.GELU,
    'SiLU': nn.SiLU,
    'Swish': nn.SiLU,
    'HSigmoid': nn.Hardsigmoid,
    'HSwish': nn.Hardswish,
}

#: activations whose constructor takes ``inplace``
INPLACE_ACTIVATIONS = frozenset(
    {'ReLU', 'LeakyReLU', 'RReLU', 'ReLU6', 'ELU', 'SiLU', 'Swish', 'HSigmoid', 'HSwish'}
)

_CONV_LAYERS: dict[str, type[nn.Module]] = {
    'Conv': nn.Conv2d,
    'Conv1d': nn.Conv1d,
    'Conv2d': nn.Conv2d,
    'Conv3d': nn.Conv3d,
}


def _split_type(cfg: dict, kind: str, known: dict) -> tuple[str, dict]:
    if not isinstance(cfg, Mapping) or 'type' not in cfg:
        raise ConfigError(f'{kind} config must be a dict with a "type" key, got {cfg!r}')
    args = dict(cfg)
    layer_type = args.pop('type')
    if layer_type not in known:
        raise ConfigError(f'unsupported {kind} type {layer_type!r} (known: {", ".join(known)})')
    return layer_type, args


def build_norm_layer(
    cfg: dict, num_features: int, postfix: int | str = ''
) -> tuple[str, nn.Module]:
    """Build a norm layer from ``cfg`` (type BN/SyncBN/GN/LN/IN, ``requires_grad``, ``eps``...).

    Args:
        cfg: norm config; GN needs ``num_groups``.
        num_features: channels (BN, GN, IN) or the normalised size (LN).
        postfix: appended to the name, e.g. ``1`` gives ``bn1``.

    Returns:
        ``(name, module)``, the name being the type's abbreviation plus ``postfix``.
    """
    layer_type, args = _split_type(cfg, 'norm', _NORM_LAYERS)
    layer_cls, abbr = _NORM_LAYERS[layer_type]
    requires_grad = args.pop('requires_grad', True)
    args.setdefault('eps', 1e-5)
    if layer_type == 'GN':
        if 'num_groups' not in args:
            raise ConfigError(f'GN norm config needs num_groups, got {cfg!r}')
        layer = nn.GroupNorm(num_channels=num_features, **args)
    else:
        layer = layer_cls(num_features, **args)
    for param in layer.parameters():
        param.requires_grad = requires_grad
    return f'{abbr}{postfix}', layer


def build_activation_layer(cfg: dict) -> nn.Module:
    """Build an activation from ``cfg`` (ReLU, LeakyReLU(negative_slope), Sigmoid, ...)."""
    layer_type, args = _split_type(cfg, 'activation', _ACTIVATION_LAYERS)
    return _ACTIVATION_LAYERS[layer_type](**args)


def build_conv_layer(cfg: dict | None, *args, **kwargs) -> nn.Module:
    """Build a conv layer; ``cfg=None`` means ``nn.Conv2d``. Extra arguments go to the conv."""
    layer_type, cfg_args = _split_type(cfg or dict(type='Conv2d'), 'conv', _CONV_LAYERS)
    return _CONV_LAYERS[layer_type](*args, **kwargs, **cfg_args)


def is_norm(module: nn.Module) -> bool:
    """True for the norm layers that :func:`build_norm_layer` can build."""
    return isinstance(
        module,
        (
            nn.modules.batchnorm._BatchNorm,
            nn.GroupNorm,
            nn.LayerNorm,
            nn.modules.instancenorm._InstanceNorm,
        ),
    )
