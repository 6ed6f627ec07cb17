"""Second-stage (RoI) heads: RoI extractors, box and mask heads, Standard, Cascade and PointRend
RoI heads."""

from .bbox_heads import BBoxHead, ConvFCBBoxHead, Shared2FCBBoxHead
from .cascade_roi_head import CascadeRoIHead
from .generic_roi_extractor import GenericRoIExtractor, SimpleRoIAlign
from .mask_heads import FCNMaskHead
from .point_rend_mask_heads import CoarseMaskHead, MaskPointHead
from .point_rend_roi_head import PointRendRoIHead
from .roi_extractors import RoIAlign, SingleRoIExtractor
from .standard_roi_head import StandardRoIHead

__all__ = [
    'BBoxHead',
    'CascadeRoIHead',
    'CoarseMaskHead',
    'ConvFCBBoxHead',
    'FCNMaskHead',
    'GenericRoIExtractor',
    'MaskPointHead',
    'PointRendRoIHead',
    'RoIAlign',
    'Shared2FCBBoxHead',
    'SimpleRoIAlign',
    'SingleRoIExtractor',
    'StandardRoIHead',
]
