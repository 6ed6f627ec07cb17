from .anchor_free_head import AnchorFreeHead
from .anchor_head import AnchorHead
from .base_dense_head import BaseDenseHead
from .corner_head import CornerHead
from .detr_head import DETRHead
from .dino_head import DINOHead
from .fcos_head import FCOSHead
from .fsaf_head import FSAFHead
from .retina_head import RetinaHead
from .rpn_head import RPNHead
from .rtmdet_head import RTMDetSepBNHead
from .rtmdet_ins_head import RTMDetInsSepBNHead
from .ssd_head import SSDHead
from .yolo_head import YOLOV3Head
from .yolox_head import YOLOXHead

__all__ = [
    'AnchorFreeHead',
    'AnchorHead',
    'BaseDenseHead',
    'CornerHead',
    'DETRHead',
    'DINOHead',
    'FCOSHead',
    'FSAFHead',
    'RPNHead',
    'RetinaHead',
    'RTMDetInsSepBNHead',
    'RTMDetSepBNHead',
    'SSDHead',
    'YOLOV3Head',
    'YOLOXHead',
]
