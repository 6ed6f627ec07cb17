"""Training of the zoo's detectors (MMDetection semantics): assigners, samplers, losses, targets,
training-time data and the loop behind ``tools/train.py``.

Only ``tools/train.py`` and tests import this package; inference and export never do.
"""

from .assigners import AssignResult, MaxIoUAssigner, bbox_overlaps, build_assigner
from .head_losses import dense_head_loss, detector_loss, two_stage_loss
from .losses import CrossEntropyLoss, FocalLoss, L1Loss, SmoothL1Loss, build_loss
from .samplers import PseudoSampler, RandomSampler, SamplingResult, build_sampler

__all__ = [
    'AssignResult',
    'CrossEntropyLoss',
    'FocalLoss',
    'L1Loss',
    'MaxIoUAssigner',
    'PseudoSampler',
    'RandomSampler',
    'SamplingResult',
    'SmoothL1Loss',
    'bbox_overlaps',
    'build_assigner',
    'build_loss',
    'build_sampler',
    'dense_head_loss',
    'detector_loss',
    'two_stage_loss',
]
