"""COCO-format data: the synthetic generator, the test pipeline and the test data loader."""

from .coco import CocoDetectionDataset, build_dataloader, load_coco
from .pipeline import TestPipeline, collate, load_image, normalize, pad_to, rescale_size
from .synthetic import CATEGORIES, generate_synthetic_coco, render_sample_image

__all__ = [
    'CATEGORIES',
    'CocoDetectionDataset',
    'TestPipeline',
    'build_dataloader',
    'collate',
    'generate_synthetic_coco',
    'load_coco',
    'load_image',
    'normalize',
    'pad_to',
    'render_sample_image',
    'rescale_size',
]
