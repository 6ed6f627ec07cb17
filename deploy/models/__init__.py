"""The model zoo. Importing it registers every model class in ``deploy.registry.MODELS``."""

from . import backbones, dense_heads, detectors, layers, necks, roi_heads, task_utils  # noqa: F401
from .builder import build_detector

__all__ = ['build_detector']
