from .base import BaseDetector
from .cornernet import CornerNet
from .detr import DETR
from .dino import DINO
from .point_rend import PointRend
from .rtmdet import RTMDet
from .single_stage import FCOS, FSAF, YOLOV3, YOLOX, RetinaNet, SingleStageDetector
from .two_stage import CascadeRCNN, FasterRCNN, MaskRCNN, TwoStageDetector

__all__ = [
    'BaseDetector',
    'CascadeRCNN',
    'CornerNet',
    'DETR',
    'DINO',
    'FCOS',
    'FSAF',
    'FasterRCNN',
    'MaskRCNN',
    'PointRend',
    'RTMDet',
    'RetinaNet',
    'SingleStageDetector',
    'TwoStageDetector',
    'YOLOV3',
    'YOLOX',
]
