"""Config-driven deployment of object detectors: PyTorch -> ONNX -> ONNX Runtime / TensorRT."""

__version__ = '0.1.0'


def __getattr__(name: str):
    """``deploy.Detector`` without importing PyTorch and the backends at ``import deploy``."""
    if name in ('Detector', 'Detections'):
        from . import api

        return getattr(api, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
