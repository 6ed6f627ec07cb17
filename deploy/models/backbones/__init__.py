"""Backbones, registered under MMDetection's type names."""

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
    'CSPNeXt',
    'Darknet',
    'HourglassNet',
    'MobileNetV2',
    'ResLayer',
    'ResNet',
]
