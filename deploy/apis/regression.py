"""Accuracy regression job: export each model, evaluate it on every backend, compare with PyTorch.

A regression file (YAML) lists models with their metrics, a PyTorch AP floor and, per backend, the
largest AP drop tolerated below PyTorch (AP in percent points, as in MMDetection's tables;
classifiers list ``accuracy``, their top-1 accuracy in percent):

    models:
      - name: retinanet_tiny
        config: configs/bundled/retinanet_r18_tiny_synthetic.py
        checkpoint: checkpoints/retinanet_r18_tiny_synthetic.pth
        metrics: [bbox]
        floor: {bbox: 50.0}
        backends: {onnxruntime: {bbox: 0.1}}

An entry may name a backend with an inference precision (``openvino:bf16``), and may quantise its
export to INT8 first (``quantize: {calib_images: 32}``, the options of ``tools/quantize.py``);
entries with the same config, checkpoint and export options share one export.

The job fails (non-zero exit in the tool) when PyTorch is below its floor, a backend is more than
its tolerance below PyTorch, or export verification fails.
"""

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..backends import BACKENDS, PRECISION_BACKENDS
from ..errors import BackendUnavailable, ConfigError, DeployError
from ..export.options import EXPORTERS
from ..fileio import write_atomic
from .export import ExportResult, export_model
from .test import run_test

#: what an entry's ``export`` mapping may set (keyword arguments of ``export_model``)
EXPORT_OPTIONS = ('exporter', 'precision', 'preprocess_in_graph', 'simplify')

#: what an entry's ``quantize`` mapping may set (keyword arguments of ``quantize_model``)
QUANTIZE_OPTIONS = (
    'calib_images',
    'calib_split',
    'check_images',
    'method',
    'per_channel',
    'roi_heads',
    'min_parity_ap',
    'weights',
)

#: metric name in a regression file -> key of the test run's metrics (evaluate_coco's, or the
#: classifier's top-1 accuracy)
METRIC_KEYS = {
    'bbox': 'bbox_mAP',
    'segm': 'segm_mAP',
    'proposal': 'AR@1000',
    'accuracy': 'accuracy/top1',
}
#: metrics that runs already report in percent (COCO metrics are fractions)
PERCENT_METRICS = frozenset({'accuracy'})


@dataclass
class BackendRow:
    model: str
    backend: str
    ap: dict = field(default_factory=dict)  # metric -> AP in percent
    #: mean backend time per image; None: the row never ran (it has no AP either)
    latency_ms: float | None = None
    failures: list = field(default_factory=list)
    #: 1-minute load average at the end of the evaluation (None where unknown)
    load_average: float | None = None
    #: why this machine cannot run the row (e.g. BF16 on a CPU without it): not a failure
    skipped: str | None = None
    #: metric -> AP drop below PyTorch (percent points) and the drop tolerated
    drop: dict = field(default_factory=dict)
    tolerance: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def ran(self) -> bool:
        """Whether the row was evaluated at all (a row that never ran has no AP, not AP 0)."""
        return self.latency_ms is not None


def select_entries(entries: list[dict], names: list[str] | None, path: str | Path) -> list[dict]:
    """The entries named in ``names`` (``--models``), in the file's order; all without names."""
    if not names:
        return entries
    known = [e['name'] for e in entries]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f'--models: no entry {", ".join(unknown)} in {path} (entries: {", ".join(known)})'
        )
    return [e for e in entries if e['name'] in names]


def load_regression_file(path: str | Path) -> list[dict]:
    """The ``models`` entries of a regression file, with paths checked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'regression file not found: {path}')
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f'malformed regression file {path}: {err}') from None
    entries = (data or {}).get('models')
    if not entries:
        raise ConfigError(f'`models` missing in {path}')
    for entry in entries:
        for key in ('name', 'config', 'checkpoint', 'metrics'):
            if key not in entry:
                raise ConfigError(f'`{key}` missing in an entry of {path}')
        for section, known in (('export', EXPORT_OPTIONS), ('quantize', QUANTIZE_OPTIONS)):
            unknown = sorted(set(entry.get(section) or {}) - set(known))
            if unknown:
                raise ConfigError(
                    f'unknown `{section}` keys {unknown} in entry {entry["name"]} of {path} '
                    f'(known: {", ".join(known)})'
                )
        for backend in entry.get('backends') or {}:
            name, _, precision = str(backend).partition(':')
            if name not in BACKENDS:
                raise ConfigError(
                    f'unknown backend {name!r} in entry {entry["name"]} of {path} '
                    f'(known: {", ".join(BACKENDS)})'
                )
            if precision and name not in PRECISION_BACKENDS:
                raise ConfigError(
                    f'backend {backend!r} in entry {entry["name"]} of {path}: only '
                    f'{", ".join(PRECISION_BACKENDS)} takes a precision'
                )
    return entries


@dataclass
class _Shared:
    """What entries share: one PyTorch run serves every export of a model, one export every
    entry with the same options, one INT8 file every entry with the same quantisation."""

    references: dict[str, BackendRow] = field(default_factory=dict)
    exports: dict[str, tuple[Path, ExportResult]] = field(default_factory=dict)
    quantized: dict[str, tuple[Path, str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class RegressionOptions:
    """What a regression run is asked to do (``tools/regression_test.py``'s flags); the checks
    that need no file run when it is made.

    ``cfg_options`` apply everywhere; ``export_cfg_options`` only to the deployed model (its
    export and its evaluation on each backend; the PyTorch reference keeps the config's values),
    e.g. to check that a deployment bug such as a wrong ``score_thr`` baked into the graph makes
    the job fail. ``exporter``: None for each model's default; ``skip_backends``: the backends
    (as the regression file names them) to leave out.
    """

    cfg_options: dict | None = None
    export_cfg_options: dict | None = None
    exporter: str | None = None
    skip_backends: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, 'skip_backends', tuple(self.skip_backends or ()))
        if self.exporter is not None and self.exporter not in EXPORTERS:
            raise ConfigError(
                f'--exporter must be one of {", ".join(EXPORTERS)}, got {self.exporter!r}'
            )


def run_regression(
    entries: list[dict],
    work_dir: str | Path,
    *,
    logger: Callable[[str], None] = print,
    **options: Any,
) -> list[BackendRow]:
    """:func:`run_regression_job` with ``RegressionOptions(**options)`` (``cfg_options``,
    ``export_cfg_options``, ``exporter``, ``skip_backends``)."""
    return run_regression_job(entries, work_dir, RegressionOptions(**options), logger)


def run_regression_job(
    entries: list[dict],
    work_dir: str | Path,
    options: RegressionOptions,
    logger: Callable[[str], None] = print,
) -> list[BackendRow]:
    """Export, verify and evaluate every entry; return one row per model and backend (see
    :class:`RegressionOptions`). A backend that cannot run the model (a bad file, a setting the
    file cannot honour) fails its row with the reason instead of stopping the job.
    """
    work_dir = Path(work_dir)
    rows: list[BackendRow] = []
    shared = _Shared()
    skip_backends = options.skip_backends
    for entry in entries:
        entry_options = dict(entry.get('cfg_options') or {}, **(options.cfg_options or {}))
        deployed = dict(entry_options, **(options.export_cfg_options or {}))
        export_key, onnx_file, exported = _shared_export(
            entry, deployed, options.exporter, work_dir, shared, logger
        )
        if not exported.verified:
            reference = _reference_row(entry, entry_options, shared, logger)
            rows += _not_run(entry, reference, skip_backends)
            continue
        quantize_failure = None
        if entry.get('quantize') is not None:
            onnx_file, quantize_failure = _shared_int8(
                entry, export_key, onnx_file, deployed, work_dir, shared, logger
            )
        reference = _reference_row(entry, entry_options, shared, logger)
        rows.append(reference)
        failures = [quantize_failure] if quantize_failure else []
        for backend, tolerances in (entry.get('backends') or {}).items():
            if backend not in skip_backends:
                row = _evaluate(
                    entry, backend, onnx_file, tuple(entry['metrics']), deployed, logger
                )
                rows.append(_judged(row, reference, tolerances, failures))
    return rows


def _not_run(entry, reference: BackendRow, skip_backends) -> list[BackendRow]:
    """The rows of an entry whose export failed verification: its backends never ran."""
    reason = 'export verification failed: no verified file to run'
    backends = [b for b in entry.get('backends') or {} if b not in skip_backends]
    return [reference] + [BackendRow(entry['name'], b, failures=[reason]) for b in backends]


def _shared_export(entry, deployed, exporter, work_dir: Path, shared: _Shared, logger):
    """The entry's verified dynamic export: ``(its key, file, ExportResult)``."""
    export_kwargs = {'exporter': exporter} if exporter else {}
    export_kwargs.update(entry.get('export') or {})
    export_key = repr(
        (
            entry['config'],
            entry['checkpoint'],
            sorted(export_kwargs.items()),
            sorted(deployed.items()),
        )
    )
    if export_key in shared.exports:
        onnx_file, exported = shared.exports[export_key]
        logger(f'== {entry["name"]}: reusing the export {onnx_file}')
        return export_key, onnx_file, exported
    onnx_file = work_dir / f'{entry["name"]}.onnx'
    logger(f'== {entry["name"]}: export + verify')
    exported = export_model(
        entry['config'],
        entry['checkpoint'],
        onnx_file,
        input_img=entry.get('input_img', 'demo/demo.jpg'),
        dynamic=True,
        verify=True,
        cfg_options=deployed,
        logger=logger,
        **export_kwargs,
    )
    shared.exports[export_key] = (onnx_file, exported)
    return export_key, onnx_file, exported


def _shared_int8(entry, export_key, onnx_file, deployed, work_dir, shared: _Shared, logger):
    """The entry's INT8 file and the failure of its parity check (``None``: passed)."""
    quantize_options = _resolved_quantize_options(entry['quantize'])
    quantize_key = repr((export_key, sorted(quantize_options.items())))
    if quantize_key in shared.quantized:
        logger(f'== {entry["name"]}: reusing the INT8 file {shared.quantized[quantize_key][0]}')
    else:
        int8_file = work_dir / f'{entry["name"]}.int8.onnx'
        shared.quantized[quantize_key] = _quantize(
            entry, onnx_file, int8_file, quantize_options, deployed, logger
        )
    return shared.quantized[quantize_key]


def _reference_row(entry, options: dict, shared: _Shared, logger) -> BackendRow:
    """The PyTorch row of the entry, checked against the entry's AP floors."""
    metrics = tuple(entry['metrics'])
    key = repr((entry['config'], entry['checkpoint'], metrics, sorted(options.items())))
    if key not in shared.references:
        shared.references[key] = _evaluate(
            entry, 'pytorch', entry['checkpoint'], metrics, options, logger
        )
    measured = shared.references[key]
    reference = replace(measured, model=entry['name'], failures=list(measured.failures))
    for metric, floor in (entry.get('floor') or {}).items():
        if reference.ran and reference.ap.get(metric, 0.0) < floor:
            reference.failures.append(
                f'{metric} AP {reference.ap.get(metric, 0.0):.1f} below the floor {floor:.1f}'
            )
    return reference


def _judged(row: BackendRow, reference: BackendRow, tolerances, failures: list[str]) -> BackendRow:
    """A backend's row with the export's and quantisation's failures and its AP drops against
    PyTorch beyond the tolerances; a skipped row stays as it is."""
    if row.skipped:
        return row
    row.failures.extend(failures)
    if not (row.ran and reference.ran):
        if row.ran:
            row.failures.append('no PyTorch AP to compare with')
        return row
    for metric, tol in (tolerances or {}).items():
        drop = reference.ap.get(metric, 0.0) - row.ap.get(metric, 0.0)
        row.drop[metric], row.tolerance[metric] = drop, tol
        if drop > tol + 1e-9:
            row.failures.append(
                f'{metric} AP {row.ap.get(metric, 0.0):.1f} is {drop:.2f} '
                f'below PyTorch (tolerance {tol})'
            )
    return row


def _resolved_quantize_options(options: dict) -> dict:
    """An entry's ``quantize`` options with ``weights`` resolved for this CPU, so that entries
    asking for ``auto`` and for what ``auto`` means here share one file."""
    from ..onnx_graph.int8 import resolve_weights

    resolved = dict(options)
    resolved['weights'] = resolve_weights(resolved.get('weights', 'auto'))[0]
    return resolved


def _quantize(entry, fp32_file, int8_file, options, cfg_options, logger) -> tuple[Path, str | None]:
    """The entry's FP32 export quantised to INT8; a parity check below its gate is a failure
    of the entry's rows (the file is still evaluated)."""
    from .quantize import quantize_model

    logger(f'== {entry["name"]}: quantise {fp32_file} to INT8')
    result = quantize_model(
        entry['config'],
        fp32_file,
        int8_file,
        cfg_options=cfg_options,
        logger=logger,
        **options,
    )
    if result.calibration.get('check_images') and not result.passed:
        return int8_file, f'INT8 parity AP {result.parity_ap:.3f} below its gate'
    return int8_file, None


def _evaluate(entry, backend, model_file, metrics, options, logger) -> BackendRow:
    logger(f'== {entry["name"]}: evaluate on {backend}')
    engine, _, precision = backend.partition(':')
    try:
        run = run_test(
            entry['config'],
            model_file,
            engine,
            precision=precision or None,
            cfg_options=options,
            metrics=metrics,
            class_map=entry.get('class_map'),
            logger=logger,
        )
    except BackendUnavailable as err:
        logger(f'skipped: {err}')
        return BackendRow(entry['name'], backend, skipped=str(err))
    except DeployError as err:
        logger(f'error: {err}')
        return BackendRow(entry['name'], backend, failures=[f'{backend} cannot run: {err}'])
    ap = {
        m: (1.0 if m in PERCENT_METRICS else 100.0) * float(run.metrics.get(METRIC_KEYS[m], 0.0))
        for m in metrics
    }
    return BackendRow(entry['name'], backend, ap, run.latency_ms, load_average=_load_average())


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine_was_busy(rows: list[BackendRow]) -> float | None:
    """The highest load average seen when it exceeded the CPU count (latencies then include
    other people's work), else None."""
    loads = [r.load_average for r in rows if r.load_average is not None]
    cpus = os.cpu_count() or 1
    return max(loads) if loads and max(loads) > cpus else None


def format_markdown(rows: list[BackendRow]) -> str:
    """The model x backend x {AP per metric, latency} table, in Markdown."""
    metrics = sorted({m for r in rows for m in r.ap}, key=list(METRIC_KEYS).index)
    names = {'bbox': 'box AP', 'segm': 'mask AP', 'proposal': 'AR@1000', 'accuracy': 'top-1 acc'}
    header = ['model', 'backend', *(names[m] for m in metrics), 'latency (ms/img)', 'status']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        not_run = '-' if r.skipped else 'not run'
        cells = [
            r.model,
            r.backend,
            *(_ap_cell(r, m) if r.ran else not_run for m in metrics),
            f'{r.latency_ms:.1f}' if r.ran else not_run,
            _status(r),
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += [
        '',
        "AP in percent on the test set of each config; a backend's AP is followed by its drop "
        'below PyTorch and the drop tolerated. latency: mean wall time of one backend '
        'call per image, as tools/test.py measures it (data loading, pre-processing and '
        'evaluation excluded; batch 1).',
    ]
    busy = machine_was_busy(rows)
    if busy is not None:
        lines.append(
            f'The machine was busy (load average {busy:.1f} on {os.cpu_count()} CPUs): the '
            'latencies include other work; take them again on a quiet machine.'
        )
    return '\n'.join(lines)


def _ap_cell(row: BackendRow, metric: str) -> str:
    """``68.4`` for PyTorch, ``68.3 (drop 0.10, tol 0.1)`` for a backend judged against it."""
    if metric not in row.ap:
        return '-'
    if metric not in row.drop:
        return f'{row.ap[metric]:.1f}'
    return f'{row.ap[metric]:.1f} (drop {row.drop[metric]:.2f}, tol {row.tolerance[metric]:g})'


def _status(row: BackendRow) -> str:
    if not row.passed:
        return 'FAIL: ' + '; '.join(row.failures)
    return f'skipped: {row.skipped}' if row.skipped else 'ok'


def write_reports(rows: list[BackendRow], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.json`` atomically; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / 'report.md', out_dir / 'report.json'
    payload = dict(
        passed=all(r.passed for r in rows), rows=[dict(asdict(r), passed=r.passed) for r in rows]
    )
    write_atomic(md, format_markdown(rows) + '\n')
    write_atomic(js, json.dumps(payload, indent=2))
    return md, js
