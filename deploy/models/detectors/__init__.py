from .base import BaseDetector
from .single_stage import RetinaNet, SingleStageDetector

__all__ = ['BaseDetector', 'RetinaNet', 'SingleStageDetector']
