"""TensorRT backend: engines built from our exported ONNX files, run with the named-tensor API.

Importing this package needs neither ``tensorrt`` nor a GPU: both are imported when an engine is
built or loaded, and their absence is a one-line :class:`~deploy.errors.BackendError`.

* :mod:`.compat` -- CPU checks that a graph suits TensorRT (ops, TopK k, NMS input types);
* :mod:`.profiles` -- optimisation profiles from ``backend_config`` and the model spec;
* :mod:`.precision` -- FP16 on TensorRT 10 (builder flag) and 11 (strongly typed, FP16 ONNX);
* :mod:`.engine` -- building, the engine cache and the sidecar JSON;
* :mod:`.runtime` -- :class:`TensorRTBackend`.

The job behind ``tools/onnx2tensorrt.py`` (build + verify) is :mod:`deploy.apis.tensorrt`.
"""

from .compat import assert_tensorrt_compatible, check_tensorrt_compat
from .engine import BuildSettings, build_engine, import_tensorrt
from .precision import convert_to_mixed_fp16, plan_precision
from .profiles import ShapeRange, resolve_profiles
from .runtime import TensorRTBackend

__all__ = [
    'BuildSettings',
    'ShapeRange',
    'TensorRTBackend',
    'assert_tensorrt_compatible',
    'build_engine',
    'check_tensorrt_compat',
    'convert_to_mixed_fp16',
    'import_tensorrt',
    'plan_precision',
    'resolve_profiles',
]
