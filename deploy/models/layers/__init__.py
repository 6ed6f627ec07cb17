"""Building blocks shared by the zoo: MMCV's ``ConvModule``, norm/activation builders, ``Scale``."""

from .conv_module import ConvModule
from .norm import build_activation_layer, build_conv_layer, build_norm_layer, is_norm
from .scale import Scale

__all__ = [
    'ConvModule',
    'Scale',
    'build_activation_layer',
    'build_conv_layer',
    'build_norm_layer',
    'is_norm',
]
