"""Necks, registered under MMDetection's type names."""

from .channel_mapper import ChannelMapper
from .fpn import FPN
from .ssd_neck import SSDNeck
from .yolo_neck import YOLOV3Neck

__all__ = ['ChannelMapper', 'FPN', 'SSDNeck', 'YOLOV3Neck']
