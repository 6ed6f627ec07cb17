"""Necks, registered under MMDetection's (and MMPretrain's) type names."""

from .channel_mapper import ChannelMapper
from .cspnext_pafpn import CSPNeXtPAFPN
from .fpn import FPN
from .gap import GlobalAveragePooling
from .ssd_neck import SSDNeck
from .yolo_neck import YOLOV3Neck
from .yolox_pafpn import YOLOXPAFPN

__all__ = [
    'ChannelMapper',
    'CSPNeXtPAFPN',
    'FPN',
    'GlobalAveragePooling',
    'SSDNeck',
    'YOLOV3Neck',
    'YOLOXPAFPN',
]
