"""Second-stage (RoI) heads: RoI extractors, box and mask heads, Standard and Cascade RoI heads."""

from .bbox_heads import BBoxHead, ConvFCBBoxHead, Shared2FCBBoxHead
from .cascade_roi_head import CascadeRoIHead
from .mask_heads import FCNMaskHead
from .roi_extractors import RoIAlign, SingleRoIExtractor
from .standard_roi_head import StandardRoIHead

__all__ = [
    'BBoxHead',
    'CascadeRoIHead',
    'ConvFCBBoxHead',
    'FCNMaskHead',
    'RoIAlign',
    'Shared2FCBBoxHead',
    'SingleRoIExtractor',
    'StandardRoIHead',
]
