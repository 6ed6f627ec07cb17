"""Build serialised TensorRT engines from our ONNX files, and describe them in a sidecar JSON.

``tensorrt`` and CUDA are imported lazily (:func:`import_tensorrt`, :func:`cuda_device`): this
module imports, and its pure parts (cache keys, sidecars, precision plans) run, without either.

API used (TensorRT 10 / 11 Python): ``Builder.create_network``, ``OnnxParser.parse``,
``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)``,
``Builder.create_optimization_profile`` + ``IOptimizationProfile.set_shape``,
``IBuilderConfig.create_timing_cache`` / ``set_timing_cache`` / ``get_timing_cache``,
``Builder.build_serialized_network``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from ...errors import BackendError
from ...fileio import write_atomic
from ...spec import ModelSpec, read_onnx_spec
from .compat import assert_tensorrt_compatible
from .precision import (
    apply_builder_flags,
    convert_to_mixed_fp16,
    network_creation_flags,
    pin_postprocess_to_fp32,
    plan_precision,
)
from .profiles import ShapeRange

SIDECAR_FORMAT = 'deploy-tensorrt-engine/2'
ENGINE_SUFFIXES = ('.engine', '.plan', '.trt')


def import_tensorrt():
    """The ``tensorrt`` module, or a one-line :class:`BackendError` saying how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise BackendError(
            'TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU and driver)'
        ) from None
    return tensorrt


def cuda_device(device=None):
    """The ``torch.device`` to run on; a one-line :class:`BackendError` without a CUDA GPU.

    ``device`` is a string (``'cuda'``, ``'cuda:1'``) or a ``torch.device``; ``None`` and
    ``'cpu'`` (the tools' default device) mean the first GPU: TensorRT runs on CUDA only.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not torch.cuda.is_available():
        raise BackendError(
            'TensorRT needs a CUDA GPU, but torch sees none (torch.cuda.is_available() is False)'
        )
    if not device or device == 'cpu':
        device = 'cuda:0'
    if not device.startswith('cuda'):
        raise BackendError(f'TensorRT runs on CUDA devices, not {device!r}')
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise BackendError(f'device {device} does not exist: {torch.cuda.device_count()} GPU(s)')
    return torch.device('cuda', index)


def gpu_info(device) -> dict:
    """Name and compute capability of a CUDA device."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return dict(name=torch.cuda.get_device_name(device), compute_capability=f'{major}.{minor}')


# --------------------------------------------------------------------------------------------
# identities: file hashes, cache keys, sidecars
# --------------------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def engine_cache_key(
    onnx_sha256: str,
    profiles: dict[str, ShapeRange],
    precision: str,
    trt_version: str,
    compute_capability: str,
) -> str:
    """A short stable key: the engine depends on exactly these (and the GPU architecture)."""
    payload = json.dumps(
        dict(
            onnx=onnx_sha256,
            profiles={k: v.as_dict() for k, v in sorted(profiles.items())},
            precision=precision,
            tensorrt=trt_version,
            sm=compute_capability,
        ),
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def timing_cache_path(onnx_path: str | Path, trt_version: str, gpu_name: str) -> Path:
    """The default timing cache of ``onnx_path``: next to it, one per TensorRT version and GPU
    model (a cache of another version or GPU is refused by the builder, or worse, misleads it)."""
    onnx_path = Path(onnx_path)
    gpu = ''.join(c if c.isalnum() else '-' for c in gpu_name).strip('-').lower() or 'gpu'
    return onnx_path.with_name(f'{onnx_path.stem}.trt{trt_version}.{gpu}.timing.cache')


def cached_engine_path(onnx_path: str | Path, key: str) -> Path:
    """Where an engine built from ``onnx_path`` with cache ``key`` lives: next to the ONNX."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f'{onnx_path.stem}.{key}.engine')


def sidecar_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + '.json')


def build_sidecar(
    *,
    trt_version: str,
    gpu: dict,
    profiles: dict[str, ShapeRange],
    precision: str,
    precision_mode: str,
    onnx_path: str | Path,
    onnx_sha256: str,
    spec: ModelSpec | None,
    workspace_size: int,
    cache_key: str,
) -> dict:
    """The engine's description: what built it, for which GPU, with which shapes."""
    return dict(
        format=SIDECAR_FORMAT,
        tensorrt_version=trt_version,
        gpu=gpu,
        precision=precision,
        precision_mode=precision_mode,
        profiles=[{name: r.as_dict() for name, r in profiles.items()}],
        workspace_size=int(workspace_size),
        model_spec=spec.replace(precision=precision).to_dict() if spec is not None else None,
        source_onnx=dict(path=str(onnx_path), sha256=onnx_sha256),
        cache_key=cache_key,
        created=time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    )


def write_sidecar(engine_path: str | Path, sidecar: dict) -> Path:
    return write_atomic(sidecar_path(engine_path), json.dumps(sidecar, indent=2) + '\n')


def sidecar_spec(sidecar: dict | None) -> ModelSpec | None:
    """The model spec an engine's sidecar keeps (None without one)."""
    data = (sidecar or {}).get('model_spec')
    return ModelSpec.from_dict(data) if data else None


def read_sidecar(engine_path: str | Path) -> dict | None:
    """The sidecar of ``engine_path``; None when there is none; :class:`BackendError` when it is
    unreadable or not ours."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        return None
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BackendError(f'cannot read the engine description {path}: {err}') from None
    if not isinstance(sidecar, dict) or sidecar.get('format') != SIDECAR_FORMAT:
        raise BackendError(
            f'{path} is not an engine description written by this version of the project: '
            'rebuild the engine from the ONNX file'
        )
    return sidecar


def check_sidecar(sidecar: dict, trt_version: str, gpu: dict, engine_path='engine') -> list[str]:
    """Refuse an engine built by another TensorRT version or for another GPU architecture.

    Returns warnings (same architecture, different GPU model: usually works, not guaranteed).
    """
    built = sidecar.get('tensorrt_version')
    if built != trt_version:
        raise BackendError(
            f'{engine_path} was built with TensorRT {built}, this is TensorRT {trt_version}: '
            'an engine only runs on the version that built it -- rebuild it from the ONNX file'
        )
    built_gpu = sidecar.get('gpu') or {}
    if built_gpu.get('compute_capability') != gpu.get('compute_capability'):
        raise BackendError(
            f'{engine_path} was built for {built_gpu.get("name")} (compute capability '
            f'{built_gpu.get("compute_capability")}), this GPU is {gpu.get("name")} (compute '
            f'capability {gpu.get("compute_capability")}): rebuild it from the ONNX file'
        )
    if built_gpu.get('name') != gpu.get('name'):
        return [f'{engine_path} was built on {built_gpu.get("name")}, running on {gpu.get("name")}']
    return []


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
@dataclass
class BuildSettings:
    """Everything an engine build depends on besides the ONNX file.

    ``precision``: ``fp32`` (TF32 tensor cores off: the same numbers as ONNX Runtime within
    float32 rounding), ``tf32`` (TF32 allowed) or ``fp16``.
    """

    profiles: dict[str, ShapeRange]
    precision: str = 'fp32'
    workspace_size: int = 1 << 30
    timing_cache: str | Path | None = None
    verbose: bool = False


def make_logger(trt, verbose: bool = False):
    """A ``trt.ILogger`` that keeps the errors (for one-line messages) and prints warnings."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(str(msg))
            if verbose or severity in (
                trt.ILogger.ERROR,
                trt.ILogger.INTERNAL_ERROR,
                trt.ILogger.WARNING,
            ):
                print(f'[TensorRT] {msg}')

    return _Logger()


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    settings: BuildSettings,
    device='cuda',
    logger=print,
) -> dict:
    """Build ``engine_path`` (and its sidecar) from ``onnx_path``; returns the sidecar.

    The graph is checked against TensorRT's rules at the profile's smallest shapes first
    (:mod:`.compat`), so the common build failures come back as one readable line.
    """
    trt = import_tensorrt()
    dev = cuda_device(device)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise BackendError(f'ONNX file not found: {onnx_path}')
    model = onnx.load(str(onnx_path))
    spec = read_onnx_spec(model)
    if spec is not None and spec.skip_postprocess:
        raise BackendError(
            f'{onnx_path} has no post-processing (--skip-postprocess): export it '
            'with decode and NMS for TensorRT'
        )
    assert_tensorrt_compatible(model, {k: list(v.min) for k, v in settings.profiles.items()})
    plan = plan_precision(trt, settings.precision)
    if plan.convert_onnx_to_fp16:
        model = convert_to_mixed_fp16(model)

    import torch

    with torch.cuda.device(dev):
        trt_logger = make_logger(trt, settings.verbose)
        trt.init_libnvinfer_plugins(trt_logger, '')  # RoiAlign -> ROIAlign_TRT
        builder = create_trt_object(trt.Builder, trt_logger, what='builder')
        network = builder.create_network(network_creation_flags(trt, plan))
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse(model.SerializeToString(), str(onnx_path)):
            errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BackendError(
                f'the TensorRT ONNX parser rejected {onnx_path}: '
                + ('; '.join(errors) or 'no details')
            )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_size))
        apply_builder_flags(trt, config, plan)
        if hasattr(trt.BuilderFlag, 'TF32'):
            # TF32 tensor cores round inputs to 10 mantissa bits: never unasked.
            if settings.precision == 'tf32':
                config.set_flag(trt.BuilderFlag.TF32)
            else:
                config.clear_flag(trt.BuilderFlag.TF32)
        if plan.pin_postprocess_fp32:
            pinned = pin_postprocess_to_fp32(trt, network)
            logger(f'fp16: {pinned} post-processing layers kept in fp32')
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            name = network.get_input(i).name
            if name not in settings.profiles:
                raise BackendError(f'no optimisation profile for engine input {name!r}')
            r = settings.profiles[name]
            profile.set_shape(name, r.min, r.opt, r.max)
        config.add_optimization_profile(profile)
        cache_file = Path(settings.timing_cache) if settings.timing_cache else None
        cache_bytes = cache_file.read_bytes() if cache_file and cache_file.is_file() else b''
        timing_cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(timing_cache, ignore_mismatch=False)

        logger(
            f'building a TensorRT {trt.__version__} {settings.precision} engine from '
            f'{onnx_path.name} (this takes minutes) ...'
        )
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            detail = trt_logger.errors[-1] if trt_logger.errors else 'see the TensorRT log above'
            raise BackendError(f'TensorRT could not build {onnx_path.name}: {detail}')
        if cache_file is not None:
            write_atomic(cache_file, bytes(memoryview(config.get_timing_cache().serialize())))
        write_atomic(engine_path, bytes(memoryview(serialized)))
        logger(f'built {engine_path} in {time.perf_counter() - start:.0f} s')

    onnx_sha = file_sha256(onnx_path)
    gpu = gpu_info(dev)
    sidecar = build_sidecar(
        trt_version=trt.__version__,
        gpu=gpu,
        profiles=settings.profiles,
        precision=settings.precision,
        precision_mode=(
            'strongly typed, mixed fp16 ONNX'
            if plan.convert_onnx_to_fp16
            else 'BuilderFlag.FP16, post-processing pinned to fp32'
            if plan.pin_postprocess_fp32
            else 'fp32'
        ),
        onnx_path=onnx_path,
        onnx_sha256=onnx_sha,
        spec=spec,
        workspace_size=settings.workspace_size,
        cache_key=engine_cache_key(
            onnx_sha,
            settings.profiles,
            settings.precision,
            trt.__version__,
            gpu['compute_capability'],
        ),
    )
    write_sidecar(engine_path, sidecar)
    return sidecar


def _parser_error(error) -> str:
    desc = error.desc() if hasattr(error, 'desc') else str(error)
    node = error.node_name() if hasattr(error, 'node_name') else ''
    return f'{node}: {desc}' if node else desc


def create_trt_object(factory, *args, what: str):
    """``factory(*args)`` (``trt.Builder``, ``trt.Runtime``), with a failure as one line.

    When CUDA cannot be initialised the bindings return a null object that pybind turns into
    a ``TypeError``; nothing the user can act on.
    """
    try:
        obj = factory(*args)
    except (TypeError, RuntimeError) as err:
        obj, detail = None, str(err).strip().splitlines()[0] if str(err).strip() else ''
    else:
        detail = ''
    if obj is None:
        raise BackendError(
            f'TensorRT could not create its {what} (is the NVIDIA driver working, and does this '
            f'TensorRT match its CUDA version?){": " + detail if detail else ""}'
        )
    return obj
