"""Run a TensorRT engine behind the common :class:`~deploy.backends.base.Backend` interface.

Buffers are torch CUDA tensors (no pycuda / cuda-python / cupy). Execution uses the TensorRT 10/11
named-tensor API: ``IExecutionContext.set_input_shape`` + ``set_tensor_address`` for every I/O
tensor, then ``execute_async_v3`` on torch's current CUDA stream. Outputs whose shape depends on
the data (none in our padded graphs, but foreign ones may have them) go through an
``IOutputAllocator`` backed by torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...errors import BackendError, ConfigError
from ...model_digest import model_digest
from ...spec import ModelSpec, read_onnx_spec
from ..base import Backend
from .engine import (
    ENGINE_SUFFIXES,
    BuildSettings,
    build_engine,
    cached_engine_path,
    check_sidecar,
    create_trt_object,
    cuda_device,
    engine_cache_key,
    gpu_info,
    import_tensorrt,
    read_sidecar,
    sidecar_spec,
    timing_cache_path,
)
from .profiles import DEFAULT_WORKSPACE, ShapeRange, check_input_shapes, resolve_profiles


def backend_settings(cfg, onnx_model, spec: ModelSpec | None, **overrides) -> BuildSettings:
    """:class:`BuildSettings` from ``cfg.backend_config`` and explicit overrides.

    ``overrides``: ``precision``, ``workspace_size`` (bytes), ``timing_cache``, ``input_shapes``
    (``{name: dict(min_shape=..., opt_shape=..., max_shape=...)}``), ``max_batch``, ``verbose``.
    """
    backend_config = dict(_backend_config(cfg))
    for key in ('precision', 'workspace_size', 'timing_cache'):
        if overrides.get(key) is not None:
            backend_config[key] = overrides[key]
    profiles = resolve_profiles(
        onnx_model,
        spec,
        backend_config,
        overrides.get('input_shapes'),
        overrides.get('max_batch') or backend_config.get('max_batch'),
    )
    return BuildSettings(
        profiles=profiles,
        precision=str(backend_config.get('precision', 'fp32')),
        workspace_size=int(backend_config.get('workspace_size', DEFAULT_WORKSPACE)),
        timing_cache=backend_config.get('timing_cache'),
        verbose=bool(overrides.get('verbose', False)),
    )


def _backend_config(cfg) -> Mapping:
    if cfg is None:
        return {}
    value = cfg.get('backend_config') if hasattr(cfg, 'get') else None
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f'backend_config must be a dict, got {type(value).__name__}')
    known = {'type', 'precision', 'workspace_size', 'timing_cache', 'input_shapes', 'max_batch'}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f'unknown backend_config keys {unknown}; known: {sorted(known)}')
    return value


def engine_for_onnx(
    onnx_path, cfg=None, device='cuda', rebuild=False, logger=print, **overrides
) -> Path:
    """The engine for ``onnx_path``: reused from next to it when one with the same ONNX hash,
    profile, precision, TensorRT version and GPU architecture exists, otherwise built there."""
    import onnx

    trt = import_tensorrt()
    dev = cuda_device(device)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise BackendError(f'ONNX file not found: {onnx_path}')
    model = onnx.load(str(onnx_path), load_external_data=False)
    settings = backend_settings(cfg, model, read_onnx_spec(model), **overrides)
    gpu = gpu_info(dev)
    if settings.timing_cache is None:
        settings.timing_cache = timing_cache_path(onnx_path, trt.__version__, gpu['name'])
    key = engine_cache_key(
        model_digest(onnx_path),
        settings.profiles,
        settings.precision,
        trt.__version__,
        gpu['compute_capability'],
    )
    engine_path = cached_engine_path(onnx_path, key)
    if engine_path.is_file() and read_sidecar(engine_path) and not rebuild:
        logger(f'reusing the TensorRT engine {engine_path}')
        return engine_path
    build_engine(onnx_path, engine_path, settings, device=str(dev), logger=logger)
    return engine_path


def _torch_dtype(trt, dtype):
    import torch

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    for name, torch_type in (
        ('int64', torch.int64),
        ('bfloat16', torch.bfloat16),
        ('uint8', torch.uint8),
    ):
        if hasattr(trt, name):
            table[getattr(trt, name)] = torch_type
    if dtype not in table:
        raise BackendError(f'unsupported TensorRT tensor type {dtype}')
    return table[dtype]


class TensorRTBackend(Backend):
    """A TensorRT engine on one GPU.

    Args:
        model_file: an ``.engine`` (``.plan``, ``.trt``) file with its sidecar JSON, or an
            ``.onnx`` file, from which an engine is built once and cached next to it.
        cfg: the model config; its ``backend_config`` sets precision, workspace and profile
            shapes for engines built here (see ``docs/tensorrt.md``).
        device: ``'cuda'`` / ``'cuda:N'`` (``'cpu'``, the tools' default, means the first GPU).
        **kwargs: ``precision``, ``workspace_size``, ``timing_cache``, ``input_shapes``,
            ``max_batch``, ``rebuild``, ``verbose``, ``logger``; others (``num_threads``, ...)
            are ignored.
    """

    name = 'tensorrt'

    def __init__(self, model_file: str | Path, cfg=None, device: str = 'cuda', **kwargs):
        import torch

        trt = import_tensorrt()
        self.device = cuda_device(device)
        logger = kwargs.pop('logger', print)
        model_file = Path(model_file)
        if not model_file.is_file():
            raise BackendError(f'model file not found: {model_file}')
        overrides = {
            k: kwargs[k]
            for k in (
                'precision',
                'workspace_size',
                'timing_cache',
                'input_shapes',
                'max_batch',
                'verbose',
            )
            if k in kwargs
        }
        if model_file.suffix == '.onnx':
            model_file = engine_for_onnx(
                model_file,
                cfg,
                self.device,
                rebuild=kwargs.get('rebuild', False),
                logger=logger,
                **overrides,
            )
        elif model_file.suffix not in ENGINE_SUFFIXES:
            raise BackendError(
                f'{model_file}: the tensorrt backend takes an .onnx file or an '
                f'engine ({", ".join(ENGINE_SUFFIXES)})'
            )
        self.sidecar = read_sidecar(model_file)
        if self.sidecar is None:
            logger(
                f'warning: {model_file} has no sidecar JSON: TensorRT version and GPU are '
                'not checked'
            )
        else:
            for warning in check_sidecar(
                self.sidecar, trt.__version__, gpu_info(self.device), model_file
            ):
                logger(f'warning: {warning}')
        self.model_file = model_file
        self._trt = trt
        with torch.cuda.device(self.device):
            self._logger = trt.Logger(trt.Logger.WARNING)
            trt.init_libnvinfer_plugins(self._logger, '')
            self._runtime = create_trt_object(trt.Runtime, self._logger, what='runtime')
            self.engine = self._runtime.deserialize_cuda_engine(model_file.read_bytes())
            if self.engine is None:
                raise BackendError(
                    f'TensorRT cannot load {model_file}: not an engine, or built '
                    'by another TensorRT version / for another GPU'
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        self._dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.profiles = {}
        for name in self.input_names:
            lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
            self.profiles[name] = ShapeRange(tuple(lo), tuple(opt), tuple(hi))
        self.spec = sidecar_spec(self.sidecar)
        self._allocator = None

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        check_input_shapes(inputs, self.profiles)
        context = self.context
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            keep = []
            for name in self.input_names:
                tensor = self._to_device(inputs[name], self._dtypes[name])
                keep.append(tensor)
                if not context.set_input_shape(name, tuple(tensor.shape)):
                    raise BackendError(
                        f'TensorRT refused shape {list(tensor.shape)} for input {name!r}'
                    )
                context.set_tensor_address(name, tensor.data_ptr())
            outputs, dynamic = {}, []
            for name in self.output_names:
                shape = tuple(context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    dynamic.append(name)
                    context.set_output_allocator(name, self._output_allocator())
                    continue
                outputs[name] = self._empty(shape, self._dtypes[name])
                context.set_tensor_address(name, outputs[name].data_ptr())
            if not context.execute_async_v3(stream.cuda_stream):
                raise BackendError(f'TensorRT execution of {self.model_file.name} failed')
            stream.synchronize()
            for name in dynamic:
                outputs[name] = self._allocator.take(name, self._dtypes[name])
        result = {}
        for name, tensor in outputs.items():
            array = tensor.cpu().numpy()
            if array.dtype == np.float16:
                array = array.astype(np.float32)
            elif array.dtype == np.int32 and name == 'labels':
                array = array.astype(np.int64)
            result[name] = array
        return result

    # Device memory goes through these two, so that a test can keep it in host memory.
    def _to_device(self, array: np.ndarray, dtype):
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor.to(self.device, dtype).contiguous()

    def _empty(self, shape: tuple, dtype):
        import torch

        return torch.empty(shape, dtype=dtype, device=self.device)

    def _output_allocator(self):
        if self._allocator is None:
            self._allocator = _make_output_allocator(self._trt, self.device)
        return self._allocator


def _make_output_allocator(trt, device):
    """An ``IOutputAllocator`` that hands TensorRT torch-owned device memory."""
    import torch

    class TorchOutputAllocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.buffers: dict = {}
            self.shapes: dict = {}

        def reallocate_output(self, tensor_name, memory, size, alignment):
            buffer = self.buffers.get(tensor_name)
            if buffer is None or buffer.numel() < size:
                buffer = torch.empty(max(int(size), 1), dtype=torch.uint8, device=device)
                self.buffers[tensor_name] = buffer
            return buffer.data_ptr()

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(shape)

        def take(self, tensor_name, dtype):
            shape = self.shapes[tensor_name]
            count = int(np.prod(shape)) if shape else 1
            itemsize = torch.empty((), dtype=dtype).element_size()
            raw = self.buffers[tensor_name][: count * itemsize]
            return raw.view(dtype).reshape(shape).clone()

    return TorchOutputAllocator()
