"""Backbones, registered under MMDetection's type names."""

from .darknet import Darknet
from .mobilenet_v2 import MobileNetV2
from .resnet import BasicBlock, Bottleneck, ResLayer, ResNet
from .ssd_vgg import SSDVGG

__all__ = ['SSDVGG', 'BasicBlock', 'Bottleneck', 'Darknet', 'MobileNetV2', 'ResLayer', 'ResNet']
