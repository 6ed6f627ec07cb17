from .base import BaseDetector
from .detr import DETR
from .single_stage import FCOS, FSAF, YOLOV3, RetinaNet, SingleStageDetector
from .two_stage import CascadeRCNN, FasterRCNN, MaskRCNN, TwoStageDetector

__all__ = [
    'BaseDetector',
    'CascadeRCNN',
    'DETR',
    'FCOS',
    'FSAF',
    'FasterRCNN',
    'MaskRCNN',
    'RetinaNet',
    'SingleStageDetector',
    'TwoStageDetector',
    'YOLOV3',
]
