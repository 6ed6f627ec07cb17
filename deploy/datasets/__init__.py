"""COCO-format data: the synthetic generator, the test pipeline and the test data loader."""
from .coco import CocoDetectionDataset, build_dataloader, load_coco
from .pipeline import TestPipeline, collate, load_image

__all__ = ['CocoDetectionDataset', 'TestPipeline', 'build_dataloader', 'collate', 'load_coco',
           'load_image']
