"""Priors and box coders: anchor generators and delta/distance coders (no parameters)."""

from .anchor_generator import AnchorGenerator
from .bbox_coders import DeltaXYWHBBoxCoder, DistancePointBBoxCoder, TBLRBBoxCoder, clip_bboxes

__all__ = [
    'AnchorGenerator',
    'DeltaXYWHBBoxCoder',
    'DistancePointBBoxCoder',
    'TBLRBBoxCoder',
    'clip_bboxes',
]
