"""COCO metrics and result formatting; parity of results between backends."""

from .coco_metric import evaluate_coco, format_only, results_to_coco_json

__all__ = ['evaluate_coco', 'format_only', 'results_to_coco_json']
