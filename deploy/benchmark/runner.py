"""The benchmark job behind ``tools/benchmark.py``: validate, measure each backend in a fresh
process, count FLOPs, measure the machine's peak, and assemble one report.

What is timed, identically for every backend (one iteration = one batch):

* ``pre``: the test pipeline on a real image file (decode, keep-ratio fit into ``shape``,
  normalise, pad) for each image of the batch, ``collate``, and the numpy input dict;
* ``infer``: the backend call ``backend(inputs) -> outputs`` (numpy in, numpy out: host/device
  copies are inside the span for every backend alike);
* ``post``: :func:`deploy.postprocess.outputs_to_results` (padding dropped, boxes rescaled, masks
  pasted and RLE-encoded);
* ``total``: the three together, from the same clock readings.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendError, ConfigError, DeployError
from ..progress import Stages

SCHEMA_VERSION = 1
STAGES = ('pre', 'infer', 'post', 'total')
_SUFFIX_BACKEND = {  # openvino reads .onnx too: name it with --backend
    '.onnx': 'onnxruntime',
    '.pth': 'pytorch',
    '.pt': 'pytorch',
    '.engine': 'tensorrt',
    '.plan': 'tensorrt',
}
_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_threads() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pair_models(models: list[str], backends: list[str] | None) -> list[tuple[str, str]]:
    """``MODEL...`` with ``--backend ...`` -> ``[(backend, model_file)]``.

    Without ``--backend`` each file's suffix picks it (``.onnx`` onnxruntime, ``.pth`` pytorch,
    ``.engine`` tensorrt); with one backend and several files, or several backends and one file,
    the single value is repeated.
    """
    if not models:
        raise ConfigError('give at least one model file')
    if not backends:
        backends = []
        for model in models:
            backend = _SUFFIX_BACKEND.get(Path(model).suffix.lower())
            if backend is None:
                raise ConfigError(
                    f'cannot tell the backend of {model} from its suffix: give --backend'
                )
            backends.append(backend)
    if len(backends) == 1 and len(models) > 1:
        backends = backends * len(models)
    if len(models) == 1 and len(backends) > 1:
        models = models * len(backends)
    if len(models) != len(backends):
        raise ConfigError(
            f'{len(models)} model files but {len(backends)} backends: '
            'give one --backend per model file'
        )
    pairs = list(zip(backends, models))
    for backend, model in pairs:
        if not Path(model).is_file():
            raise BackendError(f'{backend} model file not found: {model}')
    return pairs


def onnx_input_rules(model_file: str) -> tuple[tuple[int, int] | None, int | None]:
    """``((h, w) | None, batch | None)``: the static spatial shape and batch of an ONNX input."""
    import onnx

    try:
        graph = onnx.load(str(model_file), load_external_data=False).graph
    except Exception as err:  # DecodeError, OSError, ...
        raise BackendError(f'cannot read ONNX file {model_file}: {err}') from None
    inputs = [i for i in graph.input if i.name == 'input'] or list(graph.input[:1])
    if not inputs:
        return None, None
    dims = [
        d.dim_value if d.HasField('dim_value') else None
        for d in inputs[0].type.tensor_type.shape.dim
    ]
    if len(dims) != 4:
        return None, None
    spatial = (dims[2], dims[3]) if dims[2] and dims[3] else None
    return spatial, dims[0]


def resolve_shape(cfg, pairs, shape) -> tuple[int, int]:
    """The benchmark's ``(h, w)``: ``--shape``, else a static ONNX model's, else the config's test
    scale (short side x long side, padded to the size divisor). Static models must agree."""
    from ..config import get_preprocess_cfg

    static = {}
    for _, model in pairs:
        if Path(model).suffix.lower() == '.onnx':
            spatial, _ = onnx_input_rules(model)
            if spatial:
                static[model] = spatial
    if shape:
        shape = (shape[0], shape[0]) if len(shape) == 1 else tuple(shape[:2])
    elif static:
        shape = next(iter(static.values()))
    else:
        pre = get_preprocess_cfg(cfg)
        div = pre.size_divisor or 1
        shape = (-(-min(pre.scale) // div) * div, -(-max(pre.scale) // div) * div)
    for model, spatial in static.items():
        if tuple(spatial) != tuple(shape):
            raise ConfigError(
                f'{model} is static at {spatial[0]}x{spatial[1]} but the benchmark '
                f'shape is {shape[0]}x{shape[1]}: pass --shape {spatial[0]} '
                f'{spatial[1]} or export with --dynamic-export'
            )
    return int(shape[0]), int(shape[1])


def check_batch(pairs, batch_size: int) -> None:
    for _, model in pairs:
        if Path(model).suffix.lower() == '.onnx':
            _, batch = onnx_input_rules(model)
            if batch and batch != batch_size:
                raise ConfigError(
                    f'{model} has a static batch of {batch}: use --batch-size '
                    f'{batch} or export with --dynamic-export'
                )


def environment(threads: int) -> dict:
    """Versions, CPU and load: enough to tell later whether two reports are comparable."""
    import numpy
    import torch

    from ..cpu import cpu_isa

    env = dict(
        python=platform.python_version(),
        platform=platform.platform(),
        machine=platform.machine(),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count(),
        cpus_allowed=default_threads(),
        torch=torch.__version__,
        numpy=numpy.__version__,
        cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        threads=threads,
        isa=cpu_isa(),
    )
    try:
        import onnxruntime

        env['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        env['onnxruntime'] = None
    try:
        from importlib.metadata import version

        env['openvino'] = version('openvino')
    except Exception:  # not installed
        env['openvino'] = None
    return env


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_worker(spec: dict, threads: int, timeout: float | None = None) -> dict:
    """Run :mod:`deploy.benchmark.worker` on ``spec`` in a new interpreter and return its result."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get('PYTHONPATH')) if p)
    # Size every OpenMP / BLAS pool from the start, not only torch's.
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        env[var] = str(threads)
    with tempfile.TemporaryDirectory(prefix='benchmark_') as tmp:
        spec_file, out_file = Path(tmp) / 'spec.json', Path(tmp) / 'result.json'
        spec_file.write_text(json.dumps(spec))
        proc = subprocess.run(
            [sys.executable, '-m', 'deploy.benchmark.worker', str(spec_file), str(out_file)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = json.loads(out_file.read_text()) if out_file.is_file() else None
    if result is not None and 'error' in result:
        raise DeployError(result['error'])
    if proc.returncode != 0 or result is None:
        tail = '\n'.join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DeployError(
            f'the {spec.get("backend") or spec.get("exporter")} measurement failed '
            f'(exit {proc.returncode}):\n{tail}'
        )
    return result


@dataclass(frozen=True)
class BenchmarkOptions:
    """What an inference benchmark is asked to do (``tools/benchmark.py``'s flags).

    Args:
        image: the real image every iteration pre-processes.
        shape: ``(h, w)`` network input (see :func:`resolve_shape`).
        threads: torch / ONNX Runtime intra-op / OpenCV / OpenMP threads (default: all CPUs
            allowed); the same for every backend and for the peak measurement.
        checkpoint: weights for FLOP counting (default: the pytorch backend's checkpoint, else
            random weights: the dense part's count does not depend on weights).
        precisions: per model, the inference precision of backends that choose it at load
            (``openvino``: ``fp32``, ``bf16``, ``int8``; ``auto``: the file's); one value for all.
        rounds: the models are measured in turn, ``rounds`` times over (A B C A B C ...), each
            time ``iters`` timed iterations in a fresh process, and the samples merged: a load
            that comes and goes on a shared machine then hits every model alike, and the ratios
            to the first model (``ratio``) compare like with like.
    """

    image: str
    shape: tuple[int, ...] | list[int] | None = None
    batch_size: int = 1
    warmup: int = 5
    iters: int = 20
    threads: int | None = None
    device: str = 'cpu'
    checkpoint: str | None = None
    cfg_options: dict | None = None
    ort_profile: bool = True
    profile_iters: int = 5
    peak_size: int = 2048
    count_flops: bool = True
    precisions: list[str] | None = None
    rounds: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.iters < 1 or self.warmup < 0 or self.rounds < 1:
            raise ConfigError('--batch-size, --iters and --rounds must be >= 1 and --warmup >= 0')
        if not Path(self.image).is_file():
            raise ConfigError(f'image not found: {self.image}')


def run_benchmark(
    config: str,
    models: list[str],
    backends: list[str] | None = None,
    *,
    logger: Callable[[str], None] = print,
    **options: Any,
) -> dict:
    """:func:`benchmark_models` with ``BenchmarkOptions(**options)``."""
    return benchmark_models(config, models, backends, BenchmarkOptions(**options), logger)


def benchmark_models(
    config: str,
    models: list[str],
    backends: list[str] | None,
    options: BenchmarkOptions,
    logger: Callable[[str], None] = print,
) -> dict:
    """Benchmark each ``(backend, model file)`` and return the report (see ``docs/benchmark.md``).

    ``config``: the model config (pipeline, post-processing, and the model for FLOP counting);
    ``models`` / ``backends``: paired as in :func:`pair_models`.
    """
    from ..config import load_config
    from .stats import summarize  # noqa: F401  (fail here, not in a worker, if numpy is broken)

    threads = options.threads or default_threads()
    cfg = load_config(config, options.cfg_options)
    pairs = pair_models([str(m) for m in models], backends)
    wanted = pair_precisions(pairs, options.precisions)
    shape = resolve_shape(cfg, pairs, options.shape)
    check_batch(pairs, options.batch_size)
    report = _report_head(config, options, shape, threads)
    int8 = any(p == 'int8' or _file_precision(m) == 'int8' for (_, m), p in zip(pairs, wanted))
    steps = options.rounds * len(pairs) + 1 + int(options.count_flops) + int(int8)
    stages = Stages(total=steps, logger=logger)
    keys = result_keys(pairs, wanted)
    measured: dict[str, list[dict]] = {key: [] for key in keys}
    for round_index in range(options.rounds):
        for key, (backend, model), precision in zip(keys, pairs, wanted):
            spec = _worker_spec(config, options, backend, model, precision, shape, threads)
            # the profiler pass once per model, in its first round
            spec['ort_profile'] = options.ort_profile and round_index == 0
            _measure_one(stages, measured[key], key, round_index, options.rounds, spec)
    for key in keys:
        report['backends'][key] = merge_rounds(measured[key])
    checkpoint = options.checkpoint
    if checkpoint is None:
        checkpoint = next((m for b, m in pairs if b == 'pytorch'), None)
    _add_flops_and_peaks(report, cfg, options, checkpoint, shape, threads, int8, stages)
    add_ratios(report['backends'])
    report['load_average_end'] = load_average()
    report['busy'] = is_busy(report)
    return report


def _report_head(config: str, options: BenchmarkOptions, shape, threads: int) -> dict:
    """The report's record of what was run, where, and on what."""
    return dict(
        schema_version=SCHEMA_VERSION,
        kind='inference',
        config=str(config),
        cfg_options=_jsonable(options.cfg_options),
        image=str(options.image),
        shape=list(shape),
        batch_size=options.batch_size,
        warmup=options.warmup,
        iters=options.iters,
        rounds=options.rounds,
        threads=threads,
        device=options.device,
        environment=environment(threads),
        load_average_start=load_average(),
        backends={},
    )


def _worker_spec(config, options: BenchmarkOptions, backend, model, precision, shape, threads):
    """What one measuring process runs."""
    return dict(
        mode='backend',
        backend=backend,
        model_file=str(model),
        config=str(config),
        cfg_options=repr(options.cfg_options),
        image=str(options.image),
        shape=list(shape),
        batch_size=options.batch_size,
        warmup=options.warmup,
        iters=options.iters,
        threads=threads,
        device=options.device,
        precision=precision,
        ort_profile=options.ort_profile,
        profile_iters=options.profile_iters,
    )


def _add_flops_and_peaks(
    report, cfg, options: BenchmarkOptions, checkpoint, shape, threads, int8: bool, stages: Stages
) -> None:
    """FLOPs of the PyTorch model, the machine's FP32 (and INT8) peak, each result's
    efficiency against the peak of its precision."""
    flops = None
    if options.count_flops:
        with stages('count FLOPs on the PyTorch model'):
            flops = model_flops(cfg, checkpoint, options.image, shape, options.batch_size, threads)
    report['flops'] = flops
    from .peak import measure_int8_peak, measure_peak_flops

    peak_size = options.peak_size
    with stages(f'measure the FP32 peak ({peak_size}x{peak_size} matmul, {threads} threads)'):
        report['peak'] = measure_peak_flops(threads, n=peak_size)
    report['peak_int8'] = None
    if int8 or any(r.get('precision') == 'int8' for r in report['backends'].values()):
        with stages(f'measure the INT8 peak ({peak_size}x{peak_size} integer GEMM)'):
            report['peak_int8'] = measure_int8_peak(threads, n=peak_size)
    for result in report['backends'].values():
        peak = report['peak']
        if result.get('precision') == 'int8':
            peak = dict(report['peak_int8'], gflops=report['peak_int8']['gops'])
        add_efficiency(result, flops, peak)


def _file_precision(model_file: str) -> str | None:
    if Path(model_file).suffix.lower() != '.onnx':
        return None
    from ..spec import read_onnx_spec

    spec = read_onnx_spec(model_file)
    return spec.precision if spec is not None else None


def _measure_one(stages, into: list, key: str, round_index: int, rounds: int, spec: dict):
    round_text = f' (round {round_index + 1}/{rounds})' if rounds > 1 else ''
    with stages(
        f'[{key}] {spec["model_file"]}: {spec["warmup"]} warm-up + {spec["iters"]} timed '
        f'batches of {spec["batch_size"]} at {spec["shape"][0]}x{spec["shape"][1]}, '
        f'{spec["threads"]} threads{round_text}'
    ):
        into.append(run_worker(spec, spec['threads']))


def pair_precisions(pairs, precisions: list[str] | None) -> list[str | None]:
    """One inference precision per ``(backend, model)`` pair (``None``: the file's)."""
    from ..backends import PRECISION_BACKENDS

    if not precisions:
        return [None] * len(pairs)
    if len(precisions) == 1:
        precisions = list(precisions) * len(pairs)
    if len(precisions) != len(pairs):
        raise ConfigError(
            f'{len(pairs)} models but {len(precisions)} precisions: give one --precision per '
            'model file (or one for all)'
        )
    wanted = []
    for (backend, _), precision in zip(pairs, precisions):
        precision = None if precision in (None, 'auto') else precision
        if precision is not None and backend not in PRECISION_BACKENDS:
            raise ConfigError(
                f'--precision {precision} for {backend}: only {", ".join(PRECISION_BACKENDS)} '
                'chooses a precision at load time (use auto for the others)'
            )
        wanted.append(precision)
    return wanted


def result_keys(pairs, precisions) -> list[str]:
    """A unique report key per measurement: the backend, its precision where chosen or not FP32
    (``onnxruntime int8``), and the file name where that repeats."""
    keys = []
    for (backend, model), precision in zip(pairs, precisions):
        stored = _file_precision(model)
        precision = precision or (stored if stored not in (None, 'fp32') else None)
        key = backend if precision is None else f'{backend} {precision}'
        if key in keys:
            key = f'{key}:{Path(model).name}'
        suffix = 2
        while key in keys:
            key, suffix = f'{key}#{suffix}', suffix + 1
        keys.append(key)
    return keys


def merge_rounds(results: list[dict]) -> dict:
    """One result from the rounds of one model: the samples concatenated and summarised again,
    the first round's profile, the highest memory readings."""
    from .stats import summarize

    merged = dict(results[0])
    samples = {stage: [] for stage in STAGES}
    for result in results:
        for stage in STAGES:
            samples[stage].extend(result['samples_s'][stage])
    merged.pop('samples_s', None)
    merged['latency_ms'] = {stage: summarize(values) for stage, values in samples.items()}
    batch = len(samples['total']) and merged['input_shape'][0]
    merged['throughput_ips'] = dict(
        total=batch * 1000.0 / merged['latency_ms']['total']['mean'],
        infer=batch * 1000.0 / merged['latency_ms']['infer']['mean'],
    )
    merged['rounds'] = len(results)
    walls = [r['cpu_per_wall'] for r in results if r.get('cpu_per_wall') is not None]
    merged['cpu_per_wall'] = sum(walls) / len(walls) if walls else None
    for key in ('peak_rss', 'rss_after_load'):
        values = [r['memory_mb'].get(key) for r in results if r['memory_mb'].get(key)]
        if values:
            merged['memory_mb'][key] = max(values)
    return merged


def add_ratios(results: dict) -> None:
    """``ratio``: each model's mean ``infer`` and ``total`` time over the first model's (< 1:
    faster than the first)."""
    if not results:
        return
    first = next(iter(results.values()))['latency_ms']
    for result in results.values():
        latency = result['latency_ms']
        result['ratio'] = {
            stage: latency[stage]['mean'] / max(first[stage]['mean'], 1e-12)
            for stage in ('infer', 'total')
        }


def model_flops(cfg, checkpoint, image, shape, batch_size: int, threads: int) -> dict:
    """FLOPs of one batch at the benchmark shape (see :mod:`deploy.benchmark.flops`)."""
    import torch

    from ..apis.model import init_detector
    from ..config import get_preprocess_cfg
    from ..datasets.pipeline import TestPipeline, collate
    from .flops import count_detector_flops

    torch.set_num_threads(threads)
    model, _ = init_detector(cfg, checkpoint, logger=lambda *a: None)
    pipeline = TestPipeline(get_preprocess_cfg(cfg), fixed_shape=tuple(shape))
    img, metas = collate([pipeline(image) for _ in range(batch_size)])
    img_shape = torch.tensor([m['img_shape'][:2] for m in metas], dtype=torch.float32)
    result = count_detector_flops(model, img, img_shape).to_dict()
    result['weights'] = str(checkpoint) if checkpoint else 'random'
    return result


def add_efficiency(result: dict, flops: dict | None, peak: dict) -> None:
    """Per backend: FLOPs per batch, achieved GFLOP/s over the ``infer`` mean, and its fraction of
    the measured peak (also over ``total``, which includes pre/post-processing)."""
    if flops is None:
        result.update(
            flops=None, achieved_gflops=None, peak_fraction=None, peak_fraction_total=None
        )
        return
    infer_s = result['latency_ms']['infer']['mean'] / 1000.0
    total_s = result['latency_ms']['total']['mean'] / 1000.0
    achieved = flops['flops'] / infer_s / 1e9
    result.update(
        flops=flops['flops'],
        achieved_gflops=achieved,
        peak_fraction=achieved / peak['gflops'],
        peak_fraction_total=flops['flops'] / total_s / 1e9 / peak['gflops'],
    )


def is_busy(report: dict) -> bool:
    """A heuristic: the machine was shared if the 1-minute load average exceeded half the CPUs
    before the run, or our own threads plus half the CPUs after it. The numbers then include
    other people's work and must be re-taken."""
    cpus = report['environment']['cpu_count'] or 1
    start, end = report.get('load_average_start'), report.get('load_average_end')
    return bool(
        (start and start[0] > 0.5 * cpus) or (end and end[0] > report['threads'] + 0.5 * cpus)
    )


def run_export_timing(
    config: str,
    checkpoint: str | None,
    *,
    image: str,
    shape=None,
    exporters=('dynamo', 'torchscript'),
    dynamic: bool = False,
    opset: int | None = None,
    threads: int | None = None,
    cfg_options=None,
    logger=print,
) -> dict:
    """Time :func:`deploy.export.onnx_export.export_onnx` once per exporter, each in a fresh
    process: wall time of the export call and peak RSS of the process."""
    from ..config import load_config
    from ..export.onnx_export import DEFAULT_OPSET, EXPORTERS

    for exporter in exporters:
        if exporter not in EXPORTERS:
            raise ConfigError(f'unknown exporter {exporter!r}; choose from {", ".join(EXPORTERS)}')
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ConfigError(f'checkpoint not found: {checkpoint}')
    if not Path(image).is_file():
        raise ConfigError(f'image not found: {image}')
    threads = threads or default_threads()
    cfg = load_config(config, cfg_options)
    shape = resolve_shape(cfg, [], shape)
    opset = opset or DEFAULT_OPSET
    report = dict(
        schema_version=SCHEMA_VERSION,
        kind='export',
        config=str(config),
        checkpoint=str(checkpoint) if checkpoint else None,
        cfg_options=_jsonable(cfg_options),
        image=str(image),
        shape=list(shape),
        dynamic=dynamic,
        opset=opset,
        threads=threads,
        environment=environment(threads),
        load_average_start=load_average(),
        exports={},
    )
    stages = Stages(total=len(exporters), logger=logger)
    with tempfile.TemporaryDirectory(prefix='export_time_') as tmp:
        for exporter in exporters:
            spec = dict(
                mode='export',
                exporter=exporter,
                config=str(config),
                checkpoint=str(checkpoint) if checkpoint else None,
                cfg_options=repr(cfg_options),
                image=str(image),
                shape=list(shape),
                dynamic=dynamic,
                opset=opset,
                threads=threads,
                output_file=str(Path(tmp) / f'{exporter}.onnx'),
            )
            with stages(f'[{exporter}] export'):
                report['exports'][exporter] = run_worker(spec, threads)
    report['load_average_end'] = load_average()
    report['busy'] = is_busy(report)
    return report


def _jsonable(cfg_options):
    """``--cfg-options`` for the report (tuples become lists; the workers get the ``repr``)."""
    if cfg_options is None:
        return None
    if isinstance(cfg_options, dict):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg_options.items()}
    return list(cfg_options)
