"""Config-driven deployment of object detectors: PyTorch -> ONNX -> ONNX Runtime / TensorRT."""

from .api import Detections, Detector

__all__ = ['Detections', 'Detector']
__version__ = '0.1.0'
