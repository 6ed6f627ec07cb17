"""Backbones, registered under MMDetection's type names."""

from .csp_darknet import CSPDarknet, Focus
from .cspnext import CSPNeXt
from .darknet import Darknet
from .hourglass import HourglassNet
from .mobilenet_v2 import MobileNetV2
from .resnet import BasicBlock, Bottleneck, ResLayer, ResNet
from .ssd_vgg import SSDVGG

__all__ = [
    'SSDVGG',
    'BasicBlock',
    'Bottleneck',
    'CSPDarknet',
    'CSPNeXt',
    'Darknet',
    'Focus',
    'HourglassNet',
    'MobileNetV2',
    'ResLayer',
    'ResNet',
]
