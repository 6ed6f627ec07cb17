"""Image classifiers (MMClassification 0.x / MMPretrain 1.x): the classifier and its heads."""

from .cls_heads import ClsHead, LinearClsHead
from .image_classifier import ImageClassifier

__all__ = ['ClsHead', 'ImageClassifier', 'LinearClsHead']
