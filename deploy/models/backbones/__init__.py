"""Backbones, registered under MMDetection's type names."""

from .resnet import BasicBlock, Bottleneck, ResLayer, ResNet

__all__ = ['BasicBlock', 'Bottleneck', 'ResLayer', 'ResNet']
