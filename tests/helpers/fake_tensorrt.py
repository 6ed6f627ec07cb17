"""A stand-in for the ``tensorrt`` Python module, for running our ONNX -> engine -> run path on a
machine without TensorRT or a GPU.

It mirrors the names and signatures of the real TensorRT 10 / 11 bindings that
``deploy.backends.tensorrt`` uses (``Builder``, ``OnnxParser``, ``IBuilderConfig``,
``IOptimizationProfile``, ``Runtime``, ``ICudaEngine``, ``IExecutionContext``, enums), and checks
what the real ones would refuse (shapes outside the profile, a parse before the network exists,
unknown flags). The "engine" it builds is the ONNX model itself, run by ONNX Runtime when the
execution context is executed; tensor addresses are read and written through ``ctypes``, so
buffers must live in host memory (the test keeps them there).
"""

from __future__ import annotations

import ctypes
import json
from types import SimpleNamespace

import numpy as np

__version__ = '10.16.0.1'


class _Enum:
    def __init__(self, **members):
        for name, value in members.items():
            setattr(self, name, value)


class ILogger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, *args):
        pass


class Logger(ILogger):
    def __init__(self, min_severity=ILogger.WARNING):
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity, msg):
        pass


float32, float16, int32, int8, bool_, int64, uint8 = (
    'float32',
    'float16',
    'int32',
    'int8',
    'bool',
    'int64',
    'uint8',
)
globals()['bool'] = bool_  # ``trt.bool`` in the real module
_NUMPY = {float32: np.float32, float16: np.float16, int32: np.int32, int64: np.int64}
_FROM_ONNX = {1: float32, 10: float16, 6: int32, 7: int64, 9: bool_}

BuilderFlag = _Enum(FP16=0, INT8=1, TF32=2, OBEY_PRECISION_CONSTRAINTS=3, DIRECT_IO=4)
NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=1)
MemoryPoolType = _Enum(WORKSPACE=0)
TensorIOMode = _Enum(NONE=0, INPUT=1, OUTPUT=2)

#: every call the tests may want to look at
calls: list[tuple] = []
#: set to make ``Builder(...)`` fail the way the bindings do without a working driver
fail_builder = False


def init_libnvinfer_plugins(logger, namespace):
    calls.append(('init_libnvinfer_plugins', namespace))
    return True


class _Input(SimpleNamespace):
    pass


class INetworkDefinition:
    def __init__(self, flags):
        self.flags = flags
        self.onnx_bytes = None
        self.inputs: list[_Input] = []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, index):
        return self.inputs[index]

    @property
    def num_layers(self):
        return 0


class OnnxParser:
    def __init__(self, network, logger):
        self.network = network
        self.errors: list[str] = []

    def parse(self, model: bytes, path: str = '') -> bool:
        import onnx

        proto = onnx.load_from_string(model)
        initializers = {i.name for i in proto.graph.initializer}
        self.network.onnx_bytes = model
        self.network.inputs = [
            _Input(name=v.name) for v in proto.graph.input if v.name not in initializers
        ]
        calls.append(('parse', path))
        return True

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, index):
        return self.errors[index]


class IOptimizationProfile:
    def __init__(self):
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name, min, opt, max):  # noqa: A002  (the real keyword names)
        for lo, o, hi in zip(min, opt, max):
            if not lo <= o <= hi:
                raise ValueError(f'profile of {name}: min <= opt <= max does not hold')
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class ITimingCache:
    def __init__(self, data: bytes):
        self.data = data or b'fake-timing-cache'

    def serialize(self):
        return memoryview(self.data)


class IBuilderConfig:
    def __init__(self):
        self.flags: set = set()
        self.profiles: list[IOptimizationProfile] = []
        self.pool_limits: dict = {}
        self.timing_cache = None

    def set_memory_pool_limit(self, pool, size):
        self.pool_limits[pool] = size

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def get_flag(self, flag):
        return flag in self.flags

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes):
        return ITimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return self.timing_cache


class Builder:
    def __init__(self, logger):
        if fail_builder:
            # What pybind says when the C++ constructor hands back a null pointer.
            raise TypeError('pybind11::init(): factory function returned nullptr')
        self.logger = logger

    def create_network(self, flags=0):
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        calls.append(('build', sorted(config.flags)))
        profile = config.profiles[0]
        header = json.dumps(
            dict(profile={k: [list(s) for s in v] for k, v in profile.shapes.items()})
        ).encode()
        return memoryview(len(header).to_bytes(8, 'little') + header + network.onnx_bytes)


class Runtime:
    def __init__(self, logger):
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes):
        data = bytes(data)
        size = int.from_bytes(data[:8], 'little')
        try:
            header = json.loads(data[8 : 8 + size])
        except ValueError:
            return None  # the real runtime returns None for a file that is not an engine
        return ICudaEngine(header['profile'], data[8 + size :])


class ICudaEngine:
    def __init__(self, profile: dict, onnx_bytes: bytes):
        import onnx
        import onnxruntime as ort

        self.profile = {k: tuple(tuple(s) for s in v) for k, v in profile.items()}
        self.session = ort.InferenceSession(onnx_bytes, providers=['CPUExecutionProvider'])
        proto = onnx.load_from_string(onnx_bytes)
        types = {
            v.name: _FROM_ONNX[v.type.tensor_type.elem_type]
            for v in list(proto.graph.input) + list(proto.graph.output)
        }
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.types = types

    @property
    def num_io_tensors(self):
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, index):
        return (self.inputs + self.outputs)[index]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self.types[name]

    def get_tensor_profile_shape(self, name, profile_index):
        return [list(s) for s in self.profile[name]]

    def create_execution_context(self):
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self.engine = engine
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.results: dict[str, np.ndarray] | None = None

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.profile[name]
        if len(shape) != len(lo) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self.shapes[name] = tuple(shape)
        self.results = None
        return True

    def set_tensor_address(self, name, address):
        self.addresses[name] = int(address)
        return True

    def _read(self, name) -> np.ndarray:
        dtype = np.dtype(_NUMPY[self.engine.types[name]])
        shape = self.shapes[name]
        count = int(np.prod(shape))
        buffer = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.addresses[name])
        return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()

    def _run(self):
        if self.results is None:
            feed = {name: self._read(name) for name in self.engine.inputs}
            values = self.engine.session.run(None, feed)
            self.results = dict(zip(self.engine.outputs, values))
        return self.results

    def get_tensor_shape(self, name):
        if name in self.engine.inputs:
            return list(self.shapes[name])
        return list(self._run()[name].shape)

    def execute_async_v3(self, stream_handle):
        for name, value in self._run().items():
            dtype = np.dtype(_NUMPY[self.engine.types[name]])
            data = np.ascontiguousarray(value, dtype=dtype).tobytes()
            ctypes.memmove(self.addresses[name], data, len(data))
        calls.append(('execute', stream_handle))
        return True

    def set_output_allocator(self, name, allocator):
        raise AssertionError('our padded graphs have no data-dependent output shapes')
