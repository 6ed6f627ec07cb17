"""Priors and box coders: anchor/point generators and delta/distance/YOLO coders (no parameters)."""

from .anchor_generator import AnchorGenerator
from .bbox_coders import DeltaXYWHBBoxCoder, DistancePointBBoxCoder, TBLRBBoxCoder, clip_bboxes
from .point_generator import MlvlPointGenerator
from .ssd_anchor_generator import SSDAnchorGenerator
from .yolo_anchor_generator import YOLOAnchorGenerator
from .yolo_bbox_coder import YOLOBBoxCoder

__all__ = [
    'AnchorGenerator',
    'DeltaXYWHBBoxCoder',
    'DistancePointBBoxCoder',
    'MlvlPointGenerator',
    'SSDAnchorGenerator',
    'TBLRBBoxCoder',
    'YOLOAnchorGenerator',
    'YOLOBBoxCoder',
    'clip_bboxes',
]
