"""The model zoo. Importing it registers every model class in ``deploy.registry.MODELS``."""

from . import (  # noqa: F401
    backbones,
    classifiers,
    dense_heads,
    detectors,
    layers,
    necks,
    roi_heads,
    task_utils,
)
from .builder import build_detector

__all__ = ['build_detector']
