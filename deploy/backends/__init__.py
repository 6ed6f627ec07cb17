"""Backends behind one interface (:class:`Backend`): PyTorch, ONNX Runtime, OpenVINO, TensorRT,
and a model served by a Triton server."""

from pathlib import Path

from ..errors import BackendError
from .base import Backend

BACKENDS = ('pytorch', 'onnxruntime', 'openvino', 'tensorrt')
#: backends that run a model a server serves (no local model file)
SERVED_BACKENDS = ('triton',)
#: backends that choose the inference precision at load time (``precision=``)
PRECISION_BACKENDS = ('openvino',)


def build_backend(
    name: str,
    model_file: str | Path,
    cfg=None,
    device: str = 'cpu',
    num_threads: int | None = None,
    **kwargs,
) -> Backend:
    """Load ``model_file`` on backend ``name``.

    ``pytorch`` takes a checkpoint (``cfg`` builds the model); ``onnxruntime`` an ``.onnx`` file;
    ``openvino`` an ``.onnx`` file (``precision``: ``fp32``, ``bf16``, ``int8``; default the
    file's); ``tensorrt`` an ``.engine`` or an ``.onnx`` file to build (and cache) an engine from;
    ``triton`` a served model (``triton``: :class:`~deploy.backends.triton.TritonOptions`; no file).
    """
    precision = kwargs.pop('precision', None)
    if precision is not None and name not in PRECISION_BACKENDS:
        raise BackendError(
            f'a precision is chosen at load time only by {", ".join(PRECISION_BACKENDS)}; '
            f'{name} runs the precision of the file (export or quantise it in {precision})'
        )
    if name == 'pytorch':
        import torch

        from ..models.loading import init_detector
        from .pytorch import PyTorchBackend

        if num_threads:
            torch.set_num_threads(num_threads)
        model, _ = init_detector(cfg, model_file, device=device, strict=kwargs.get('strict', True))
        return PyTorchBackend(model, device=device)
    if name == 'onnxruntime':
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_file, device=device, num_threads=num_threads)
    if name == 'openvino':
        from .openvino import OpenVINOBackend

        return OpenVINOBackend(
            model_file, device=device, num_threads=num_threads, precision=precision
        )
    if name == 'tensorrt':
        try:
            from .tensorrt import TensorRTBackend
        except ImportError as err:
            raise BackendError(f'the tensorrt backend is not available here: {err}') from None
        return TensorRTBackend(model_file, cfg=cfg, device=device, **kwargs)
    if name == 'triton':
        from .triton import TritonBackend

        if kwargs.get('triton') is None:
            raise BackendError('the triton backend needs the server url and model name')
        return TritonBackend(kwargs['triton'])
    raise BackendError(f'unknown backend {name!r}; choose one of {", ".join(BACKENDS)}')


__all__ = ['BACKENDS', 'PRECISION_BACKENDS', 'SERVED_BACKENDS', 'Backend', 'build_backend']
