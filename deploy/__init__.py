"""Config-driven deployment of object detectors: PyTorch -> ONNX -> ONNX Runtime / TensorRT."""

__version__ = '0.1.0'
