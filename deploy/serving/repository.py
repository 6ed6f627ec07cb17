"""Write a Triton model repository for an exported model file.

One model folder per call::

    REPOSITORY/NAME/config.pbtxt      max_batch_size, inputs and outputs (without the batch axis),
                                      dynamic batching, instance group, backend settings, the
                                      model spec (parameter ``model_spec``)
    REPOSITORY/NAME/labels.txt        class names in label order
    REPOSITORY/NAME/1/model.onnx      (onnxruntime, openvino, python) or model.plan (tensorrt)
    REPOSITORY/NAME/1/model.py        (python) the model that runs the file with our backend classes

The configuration is built as Triton's own ``ModelConfig`` protobuf (shipped in ``tritonclient``)
and written in its text format, so Triton parses what we write; :func:`check_config` compares a
written configuration with the model file's inputs and outputs.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..fileio import staging_path
from ..spec import ModelSpec

#: Triton backends a repository can be written for
TRITON_BACKENDS = ('onnxruntime', 'openvino', 'tensorrt', 'python')
#: our backend classes the python-backend model can run the file with
PYTHON_RUNTIMES = ('onnxruntime', 'openvino')
#: the config parameter that carries the model spec (JSON) to clients
SPEC_PARAMETER = 'model_spec'
MODEL_FILES = {
    'onnxruntime': 'model.onnx',
    'openvino': 'model.onnx',
    'python': 'model.onnx',
    'tensorrt': 'model.plan',
}
#: ONNX element type -> Triton data type
_ONNX_TYPES = {
    1: 'TYPE_FP32',
    2: 'TYPE_UINT8',
    6: 'TYPE_INT32',
    7: 'TYPE_INT64',
    9: 'TYPE_BOOL',
    10: 'TYPE_FP16',
}
_PYTHON_MODEL = '''"""Triton python-backend model: model.onnx run by our backend classes."""

from deploy.serving.python_model import TritonPythonModel  # noqa: F401
'''


@dataclass(frozen=True)
class TensorIO:
    """One graph input or output: name, Triton data type, dims with the batch axis (-1: any)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class RepositoryOptions:
    """How the model is served.

    Args:
        backend: the Triton backend (:data:`TRITON_BACKENDS`).
        model_name: the model's name on the server (default: the file name without suffix).
        max_batch_size: largest batch the server forms (default 8 for a dynamic batch axis, 1
            for a static one).
        dynamic_batching: let the server batch requests of the same shape.
        preferred_batch_sizes: batch sizes the server waits for (default: powers of two).
        queue_delay_us: longest wait for a preferred batch, microseconds.
        instances: model instances (each runs one batch at a time).
        device: ``cpu`` or ``gpu`` (tensorrt is always ``gpu``).
        threads: intra-op threads per instance (0: the runtime's default).
        runtime: python backend only: which of our backend classes runs the file.
    """

    backend: str = 'python'
    model_name: str | None = None
    max_batch_size: int | None = None
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = ()
    queue_delay_us: int = 2000
    instances: int = 1
    device: str = 'cpu'
    threads: int = 0
    runtime: str = 'onnxruntime'


def onnx_io(model) -> tuple[list[TensorIO], list[TensorIO]]:
    """Inputs and outputs of an ``onnx.ModelProto`` (initializers that are also inputs left out)."""
    initializers = {init.name for init in model.graph.initializer}

    def describe(value) -> TensorIO:
        tensor = value.type.tensor_type
        data_type = _ONNX_TYPES.get(tensor.elem_type)
        if data_type is None:
            raise ConfigError(
                f'{value.name}: ONNX element type {tensor.elem_type} has no Triton type'
            )
        dims = tuple(d.dim_value if d.HasField('dim_value') else -1 for d in tensor.shape.dim)
        return TensorIO(value.name, data_type, dims)

    inputs = [describe(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [describe(v) for v in model.graph.output]


def read_model(model_file: str | Path, backend: str):
    """``(spec, onnx_path, inputs, outputs)`` of an ONNX file, or of an engine through the ONNX
    file its description names; ConfigError for a file we cannot serve."""
    import onnx

    from ..spec import read_onnx_spec

    model_file = Path(model_file)
    if not model_file.is_file():
        raise ConfigError(f'model file not found: {model_file}')
    onnx_path = model_file
    if model_file.suffix in ('.engine', '.plan'):
        if backend != 'tensorrt':
            raise ConfigError(
                f'{model_file} is a TensorRT engine: only --backend tensorrt serves it'
            )
        onnx_path, spec = _engine_source(model_file)
    elif backend == 'tensorrt':
        raise ConfigError(
            f'--backend tensorrt serves an engine: build one from {model_file} with '
            'tools/onnx2tensorrt.py on the serving GPU'
        )
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, OSError, ... for broken files
        raise ConfigError(f'cannot read ONNX file {onnx_path}: {err}') from None
    if onnx_path == model_file:
        spec = read_onnx_spec(model)
    _check_spec(spec, model_file)
    return (spec, onnx_path, *onnx_io(model))


def _engine_source(engine: Path) -> tuple[Path, ModelSpec | None]:
    from ..backends.tensorrt.engine import read_sidecar, sidecar_path, sidecar_spec

    sidecar = read_sidecar(engine)
    if sidecar is None:
        raise ConfigError(
            f'{engine} has no description ({sidecar_path(engine).name}): build it with '
            'tools/onnx2tensorrt.py'
        )
    source = Path(sidecar.get('source_onnx', {}).get('path', ''))
    if not source.is_file():
        raise ConfigError(
            f'{engine} was built from {source}, which is not here: its inputs and outputs are '
            'read from that ONNX file'
        )
    return source, sidecar_spec(sidecar)


def _check_spec(spec: ModelSpec | None, model_file: Path) -> None:
    if spec is None:
        raise ConfigError(
            f'{model_file} carries no model spec (not exported by tools/pytorch2onnx.py): '
            'clients could not tell its classes and pre-processing'
        )
    if spec.skip_postprocess:
        raise ConfigError(
            f'{model_file} holds raw head outputs (--skip-postprocess): export it without that '
            'flag to serve detections'
        )


def batch_size_limit(inputs: list[TensorIO], options: RepositoryOptions, model_file) -> int:
    """``max_batch_size``: the option, checked against the file's batch axis."""
    static = [i for i in inputs if not i.dims or i.dims[0] != -1]
    if static:
        batch = static[0].dims[0] if static[0].dims else 0
        if options.max_batch_size is not None and options.max_batch_size > max(batch, 1):
            raise ConfigError(
                f'{model_file} has a static batch of {batch} (input {static[0].name!r}): '
                f'--max-batch-size {options.max_batch_size} needs an export with '
                '--dynamic-export'
            )
        return 1 if batch == 1 else 0
    limit = 8 if options.max_batch_size is None else options.max_batch_size
    if limit < 1:
        raise ConfigError(f'--max-batch-size must be at least 1, got {limit}')
    return limit


def build_config(spec: ModelSpec, inputs, outputs, options: RepositoryOptions, name: str):
    """The ``ModelConfig`` protobuf of one model."""
    from tritonclient.grpc import model_config_pb2 as pb

    max_batch = batch_size_limit(inputs, options, name)
    config = pb.ModelConfig(name=name, max_batch_size=max_batch)
    if options.backend == 'tensorrt':
        config.platform = 'tensorrt_plan'
    else:
        config.backend = options.backend
    if options.backend in ('onnxruntime', 'openvino'):  # the python backend runs model.py
        config.default_model_filename = MODEL_FILES[options.backend]
    cut = 1 if max_batch else 0  # with max_batch_size > 0 Triton adds the batch axis itself
    for tensor in inputs:
        config.input.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims[cut:])
    for tensor in outputs:
        out = config.output.add(
            name=tensor.name, data_type=tensor.data_type, dims=tensor.dims[cut:]
        )
        if tensor.name == 'labels' and spec.class_names:
            out.label_filename = 'labels.txt'
    if options.dynamic_batching and max_batch > 1:
        sizes = options.preferred_batch_sizes or _powers_of_two(max_batch)
        if max(sizes) > max_batch:
            raise ConfigError(
                f'--preferred-batch-sizes {max(sizes)} is above --max-batch-size {max_batch}'
            )
        config.dynamic_batching.preferred_batch_size.extend(sizes)
        config.dynamic_batching.max_queue_delay_microseconds = options.queue_delay_us
    gpu = options.backend == 'tensorrt' or options.device == 'gpu'
    kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=options.instances)
    _backend_settings(config, options)
    config.parameters[SPEC_PARAMETER].string_value = spec.to_json()
    return config


def _powers_of_two(limit: int) -> list[int]:
    sizes, size = [], 2
    while size <= limit:
        sizes.append(size)
        size *= 2
    return sizes or [limit]


def _backend_settings(config, options: RepositoryOptions) -> None:
    """Optimisation settings of each backend (threads, graph level, throughput hints)."""
    params = config.parameters
    if options.backend == 'onnxruntime':
        config.optimization.graph.level = 1  # ORT_ENABLE_ALL, as our local backend
        if options.threads:
            params['intra_op_thread_count'].string_value = str(options.threads)
            params['inter_op_thread_count'].string_value = '1'
    elif options.backend == 'openvino':
        hint = 'THROUGHPUT' if config.HasField('dynamic_batching') else 'LATENCY'
        params['PERFORMANCE_HINT'].string_value = hint
        if options.threads:
            params['INFERENCE_NUM_THREADS'].string_value = str(options.threads)
    elif options.backend == 'tensorrt':
        config.optimization.input_pinned_memory.enable = True
        config.optimization.output_pinned_memory.enable = True
    else:  # python: our backend classes, see deploy.serving.python_model
        if options.runtime not in PYTHON_RUNTIMES:
            raise ConfigError(
                f'--runtime {options.runtime!r}: the python backend runs '
                f'{" or ".join(PYTHON_RUNTIMES)}'
            )
        params['runtime'].string_value = options.runtime
        params['threads'].string_value = str(options.threads)


def config_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def read_config(path: str | Path):
    """A ``config.pbtxt`` parsed with Triton's ``ModelConfig`` protobuf (ConfigError if it does
    not parse)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    try:
        return text_format.Parse(Path(path).read_text(), pb.ModelConfig())
    except (OSError, text_format.ParseError) as err:
        raise ConfigError(f'{path} is not a Triton model configuration: {err}') from None


def check_config(config, inputs: list[TensorIO], outputs: list[TensorIO]) -> list[str]:
    """Differences between a parsed configuration and the model file's inputs and outputs."""
    from tritonclient.grpc import model_config_pb2 as pb

    cut = 1 if config.max_batch_size else 0
    problems = []
    for kind, declared, actual in (
        ('input', config.input, inputs),
        ('output', config.output, outputs),
    ):
        want = {t.name: (t.data_type, tuple(t.dims[cut:])) for t in actual}
        have = {t.name: (pb.DataType.Name(t.data_type), tuple(t.dims)) for t in declared}
        for name in sorted(set(want) | set(have)):
            if want.get(name) != have.get(name):
                problems.append(f'{kind} {name}: config {have.get(name)}, model {want.get(name)}')
    return problems


def write_repository(
    model_file: str | Path, repository: str | Path, options: RepositoryOptions, overwrite=False
) -> Path:
    """Write ``repository/NAME`` for ``model_file``; returns the model folder.

    The folder is assembled under a temporary name beside it and renamed when complete and
    its configuration parses and matches the model file.
    """
    if options.backend not in TRITON_BACKENDS:
        raise ConfigError(
            f'unknown Triton backend {options.backend!r} ({", ".join(TRITON_BACKENDS)})'
        )
    model_file = Path(model_file)
    spec, onnx_path, inputs, outputs = read_model(model_file, options.backend)
    name = options.model_name or model_file.name.split('.')[0]
    config = build_config(spec, inputs, outputs, options, name)
    repository = Path(repository)
    target = repository / name
    if target.exists() and not overwrite:
        raise ConfigError(f'{target} exists: choose another --model-name or pass --overwrite')
    _remove_stale_folders(target)
    staging = staging_path(target)  # .NAME.<pid>.<random>.tmp: never taken for a model
    staging.mkdir()
    try:
        _fill_model_folder(staging, model_file, onnx_path, spec, config, options.backend)
        problems = check_config(read_config(staging / 'config.pbtxt'), inputs, outputs)
        if problems:
            raise ConfigError(
                f'the written configuration does not match {model_file}: {problems[0]}'
            )
        if target.exists():  # the old folder leaves under a temporary name, then goes
            old = staging_path(target)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _remove_stale_folders(target: Path) -> None:
    """Staging folders of ``target`` that a killed run left (their process is gone)."""
    for folder in target.parent.glob(f'.{target.name}.*.tmp'):
        pid = folder.name[len(target.name) + 2 :].split('.')[0]
        if folder.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _fill_model_folder(folder: Path, model_file, onnx_path, spec, config, backend: str) -> None:
    version = folder / '1'
    version.mkdir()
    shutil.copyfile(model_file, version / MODEL_FILES[backend])
    external = Path(onnx_path).with_name(Path(onnx_path).name + '.data')
    if backend != 'tensorrt' and external.is_file():  # external weights keep their stored name
        shutil.copyfile(external, version / external.name)
    if backend == 'python':
        (version / 'model.py').write_text(_PYTHON_MODEL)
    if spec.class_names:
        (folder / 'labels.txt').write_text(''.join(f'{c}\n' for c in spec.class_names))
    (folder / 'config.pbtxt').write_text(config_text(config))
