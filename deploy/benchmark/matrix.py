"""The deployment matrix behind ``tools/deploy_matrix.py``: one config + checkpoint exported to
FP32 ONNX, quantised to INT8, then every (backend, precision) this machine can run evaluated
with the test job (the same AP as ``tools/test.py`` on that row) and timed with the inference
benchmark in interleaved rounds; one table, a JSON report, an AP-against-latency picture and
the fastest row within an AP budget.

A row this machine cannot run (no GPU for TensorRT, no BF16 in the CPU, a uint8-weight file for
OpenVINO INT8) is ``skipped: <why>``; a row that ran and broke, or fell below the AP floor,
fails the matrix.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..apis.export import Exporter, ExportOptions
from ..apis.quantize import QuantizeOptions, Quantizer
from ..apis.test import TestOptions, evaluate_model
from ..errors import BackendUnavailable, DeployError
from ..progress import Stages

Logger = Callable[[str], None]

#: metric -> key of the test run's metrics (COCO AP, a fraction: reported in percent)
METRIC_KEYS = {'bbox': 'bbox_mAP', 'segm': 'segm_mAP'}

#: (backend, precision, which file) in table order; PyTorch first: the AP and latency reference
ROWS = (
    ('pytorch', 'fp32', 'checkpoint'),
    ('onnxruntime', 'fp32', 'fp32'),
    ('onnxruntime', 'int8', 'int8'),
    ('openvino', 'fp32', 'fp32'),
    ('openvino', 'bf16', 'fp32'),
    ('openvino', 'int8', 'int8'),
    ('tensorrt', 'fp32', 'fp32'),
    ('tensorrt', 'fp16', 'fp32'),
    ('tensorrt', 'int8', 'int8'),
)


@dataclass(frozen=True)
class MatrixOptions:
    """What a deployment matrix is asked to do (``tools/deploy_matrix.py``'s flags).

    Args:
        num_images: test images per row (the first by id; ``None``: all).
        rows: ``backend:precision`` names to run (default: all of :data:`ROWS`).
        max_ap_drop: the recommended row is the fastest whose AP is at most this below
            PyTorch's on every metric (percent points).
        ap_floor: a row that ran with its first metric's AP below this fails the matrix.
        rounds / iters / warmup: the latency benchmark's interleaved rounds (see
            :class:`deploy.benchmark.BenchmarkOptions`).
    """

    image: str
    work_dir: str = 'work_dirs/deploy_matrix'
    num_images: int | None = None
    rows: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    max_ap_drop: float = 0.3
    ap_floor: float | None = None
    exporter: str | None = None
    preprocess_in_graph: bool = False
    calib_images: int = 32
    rounds: int = 3
    iters: int = 10
    warmup: int = 3
    threads: int | None = None
    cfg_options: dict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, 'rows', tuple(self.rows or ()))
        object.__setattr__(self, 'metrics', tuple(self.metrics or ()))
        known = {f'{b}:{p}' for b, p, _ in ROWS}
        for name in self.rows:
            if name not in known:
                raise DeployError(
                    f'--rows: unknown row {name!r} (one of {", ".join(sorted(known))})'
                )
        if self.max_ap_drop < 0:
            raise DeployError(f'--max-ap-drop must be at least 0, got {self.max_ap_drop}')

    def wanted(self, backend: str, precision: str) -> bool:
        return not self.rows or f'{backend}:{precision}' in self.rows


@dataclass
class MatrixRow:
    backend: str
    precision: str
    model_file: str | None = None
    status: str = 'ok'  # ok | skipped: why | failed: why
    size_mb: float | None = None
    ap: dict = field(default_factory=dict)  # metric -> AP in percent
    drop: dict = field(default_factory=dict)  # metric -> PyTorch AP minus this row's
    latency_ms: float | None = None  # mean of pre-processing + inference + post-processing
    images_per_s: float | None = None
    ratio: float | None = None  # latency over PyTorch's (< 1: faster)
    #: ONNX Runtime rows: RoiAlign's share of the profiled run (two-stage models; no integer
    #: kernel exists for it, so it bounds what INT8 can gain there)
    roi_align_share: float | None = None

    @property
    def name(self) -> str:
        return f'{self.backend} {self.precision}'

    @property
    def ran(self) -> bool:
        return self.status == 'ok'


def tensorrt_unavailable() -> str:
    """Why the matrix has no TensorRT row here."""
    try:
        import torch
    except ImportError:
        return 'PyTorch is missing'
    if not torch.cuda.is_available():
        return 'no CUDA GPU on this machine'
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return 'the tensorrt package is not installed'
    return (
        'the matrix does not build TensorRT engines yet '
        '(tools/onnx2tensorrt.py, then tools/test.py)'
    )


class DeploymentMatrix:
    """One matrix, step by step: export, quantise, evaluate every row, time the rows that ran,
    then compare them with PyTorch."""

    def __init__(
        self, config: str, checkpoint: str, options: MatrixOptions, logger: Logger = print
    ) -> None:
        self.config, self.checkpoint = str(config), str(checkpoint)
        self.options, self.logger = options, logger
        self.work_dir = Path(options.work_dir)

    def run(self) -> dict:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        stages = Stages(total=4, logger=self.logger)
        with stages('export FP32 ONNX'):
            self.files = {'checkpoint': self.checkpoint, 'fp32': str(self.export())}
        with stages('quantise to INT8 (weights: auto)'):
            self.files['int8'], self.weights = self.quantize()
        rows = [MatrixRow(b, p, self.files[f]) for b, p, f in ROWS if self.options.wanted(b, p)]
        with stages(f'evaluate {len(rows)} rows on the test set'):
            for row in rows:
                self.evaluate(row)
        with stages('time the rows that ran (interleaved rounds)'):
            self.time_rows([r for r in rows if r.ran])
        compare_with_reference(rows)
        return self.report(rows)

    def export(self) -> Path:
        out = self.work_dir / 'model.onnx'
        options = ExportOptions(
            input_img=self.options.image,
            dynamic=True,
            preprocess_in_graph=self.options.preprocess_in_graph,
            cfg_options=self.options.cfg_options,
            **({'exporter': self.options.exporter} if self.options.exporter else {}),
        )
        return Exporter(self.config, self.checkpoint, out, options, _quiet).run().output_file

    def quantize(self) -> tuple[str, str]:
        out = self.work_dir / 'model.int8.onnx'
        options = QuantizeOptions(
            calib_images=self.options.calib_images,
            check_images=0,
            weights='auto',
            cfg_options=self.options.cfg_options,
        )
        quantizer = Quantizer(self.config, self.files['fp32'], out, options, _quiet)
        result = quantizer.run()
        return str(result.output_file), quantizer.weights

    def test_options(self, row: MatrixRow) -> TestOptions:
        """The test job's options for one row: what ``tools/test.py`` runs for it."""
        return TestOptions(
            backend=row.backend,
            precision=None if row.backend in ('pytorch', 'onnxruntime') else row.precision,
            num_images=self.options.num_images,
            metrics=self.options.metrics or default_metrics(self.config, self.options.cfg_options),
            cfg_options=self.options.cfg_options,
            num_threads=self.options.threads,
            progress=False,
        )

    def evaluate(self, row: MatrixRow) -> None:
        if row.backend == 'tensorrt':
            row.status = f'skipped: {tensorrt_unavailable()}'
            return
        row.size_mb = os.path.getsize(row.model_file) / 2**20
        try:  # the COCO summary goes to the log: stdout carries the table
            with contextlib.redirect_stdout(sys.stderr):
                run = evaluate_model(self.config, row.model_file, self.test_options(row), _quiet)
        except BackendUnavailable as err:
            row.status = f'skipped: {err}'
            return
        except DeployError as err:
            row.status = f'failed: {err}'
            return
        row.ap = {
            m: 100.0 * float(run.metrics[k]) for m, k in METRIC_KEYS.items() if k in run.metrics
        }
        self.logger(f'{row.name}: {_ap_text(row.ap)}')

    def time_rows(self, rows: list[MatrixRow]) -> None:
        from . import BenchmarkOptions, benchmark_models

        if not rows:
            return
        options = BenchmarkOptions(
            image=self.options.image,
            warmup=self.options.warmup,
            iters=self.options.iters,
            rounds=self.options.rounds,
            threads=self.options.threads,
            cfg_options=self.options.cfg_options,
            ort_profile=True,  # the RoiAlign share of ONNX Runtime rows
            profile_iters=2,
            count_flops=False,
            peak_size=256,  # the peak is not reported here
            precisions=[_bench_precision(r) for r in rows],
        )
        backends = [r.backend for r in rows]
        report = benchmark_models(
            self.config, [r.model_file for r in rows], backends, options, _quiet
        )
        self.environment = report['environment']
        for row, result in zip(rows, report['backends'].values()):
            row.latency_ms = result['latency_ms']['total']['mean']
            row.images_per_s = result['throughput_ips']['total']
            row.ratio = result['ratio']['total']
            by_op = (result.get('ort_profile') or {}).get('by_op_ms') or {}
            if 'RoiAlign' in by_op:
                row.roi_align_share = by_op['RoiAlign'] / result['ort_profile']['run_ms']

    def report(self, rows: list[MatrixRow]) -> dict:
        options = self.options
        failures = [f'{r.name}: {r.status}' for r in rows if r.status.startswith('failed')]
        if options.ap_floor is not None:
            failures += [
                f'{r.name}: AP {next(iter(r.ap.values())):.1f} below the floor {options.ap_floor}'
                for r in rows
                if r.ran and r.ap and next(iter(r.ap.values())) < options.ap_floor
            ]
        best = recommend(rows, options.max_ap_drop)
        return dict(
            config=self.config,
            checkpoint=self.checkpoint,
            num_images=options.num_images,
            int8_weights=self.weights,
            max_ap_drop=options.max_ap_drop,
            ap_floor=options.ap_floor,
            environment=getattr(self, 'environment', None),
            rows=[dict(asdict(r), name=r.name) for r in rows],
            recommended=best.name if best else None,
            note=speed_note(rows),
            failures=failures,
        )


def default_metrics(config: str, cfg_options: dict | None) -> tuple[str, ...]:
    """Box AP, and mask AP for a model with a mask head."""
    from ..config import load_config

    model = load_config(config, cfg_options).model
    roi_head = model.get('roi_head') or {}
    return ('bbox', 'segm') if roi_head.get('mask_head') else ('bbox',)


def compare_with_reference(rows: list[MatrixRow]) -> None:
    """Each row's AP drop below the PyTorch row (the first), per metric."""
    reference = next((r for r in rows if r.backend == 'pytorch' and r.ran), None)
    if reference is None:
        return
    for row in rows:
        if row.ran:
            row.drop = {m: reference.ap[m] - ap for m, ap in row.ap.items() if m in reference.ap}


def recommend(rows: list[MatrixRow], max_ap_drop: float) -> MatrixRow | None:
    """The fastest row that ran with every AP drop within ``max_ap_drop`` (small float noise
    allowed)."""
    within = [
        r
        for r in rows
        if r.ran
        and r.ap
        and r.latency_ms is not None
        and all(d <= max_ap_drop + 1e-9 for d in r.drop.values())
    ]
    return min(within, key=lambda r: r.latency_ms, default=None)


def speed_note(rows: list[MatrixRow]) -> str | None:
    """Which row is fastest end to end and by how much over ONNX Runtime FP32 (or the first
    timed row), whatever its AP; with what limits ONNX Runtime INT8 where RoiAlign ran."""
    timed = [r for r in rows if r.ran and r.latency_ms]
    if not timed:
        return None
    by_name = {r.name: r for r in timed}
    base = by_name.get('onnxruntime fp32', timed[0])
    fastest = min(timed, key=lambda r: r.latency_ms)
    note = f'fastest: {fastest.name}, {base.latency_ms / fastest.latency_ms:.2f}x {base.name}'
    int8 = by_name.get('onnxruntime int8')
    if int8 is not None and int8 is not fastest and base.name == 'onnxruntime fp32':
        note += f'; onnxruntime int8 {base.latency_ms / int8.latency_ms:.2f}x'
    if int8 is not None and int8.roi_align_share:
        note += (
            f'; RoiAlign has no integer kernel in ONNX Runtime and is '
            f'{int8.roi_align_share:.0%} of its INT8 run'
        )
    return note


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, AP) no other point beats on both (faster and at least as
    accurate), in order of latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_ap = [], float('-inf')
    for i in order:
        if points[i][1] > best_ap:
            front.append(i)
            best_ap = points[i][1]
    return front


def _bench_precision(row: MatrixRow) -> str:
    return row.precision if row.backend == 'openvino' else 'auto'


def _ap_text(ap: dict) -> str:
    return ', '.join(f'{m} AP {v:.1f}' for m, v in ap.items()) or 'no AP'


def _quiet(*_args, **_kwargs) -> None:
    pass


def format_table(report: dict) -> str:
    """The matrix as one Markdown table and the recommendation line."""
    rows = report['rows']
    metrics = list(dict.fromkeys(m for r in rows for m in r['ap']))
    head = ['row', 'status', 'size MB']
    head += [f'{m} AP' for m in metrics] + [f'{m} drop' for m in metrics]
    head += ['ms', 'img/s', 'ratio']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [r['name'], r['status'], _num(r['size_mb'], '.1f')]
        cells += [_num(r['ap'].get(m), '.1f') for m in metrics]
        cells += [_num(_no_negative_zero(r['drop'].get(m)), '+.1f') for m in metrics]
        cells += [
            _num(r['latency_ms'], '.1f'),
            _num(r['images_per_s'], '.1f'),
            _num(r['ratio'], '.2f'),
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    best = report['recommended']
    budget = report['max_ap_drop']
    lines.append('')
    if best:
        lines.append(f'recommended: {best} (the fastest row within {budget} AP of PyTorch)')
    else:
        lines.append(f'recommended: none (no row that ran is within {budget} AP of PyTorch)')
    if report.get('note'):
        lines.append(f'note: {report["note"]}')
    lines += [f'FAILED: {failure}' for failure in report['failures']]
    return '\n'.join(lines)


def plot_matrix(report: dict, path: str | Path) -> Path:
    """AP (the first metric) against latency per row that ran, the Pareto front joined, the
    recommended row ringed; written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from ..fileio import write_atomic

    rows = [r for r in report['rows'] if r['status'] == 'ok' and r['latency_ms'] and r['ap']]
    metric = next(iter(rows[0]['ap'])) if rows else 'bbox'
    points = [(r['latency_ms'], r['ap'][metric]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color='tab:blue', zorder=3)
    for i, (r, (x, y)) in enumerate(zip(rows, points)):
        offset = (5, 5) if i % 2 == 0 else (5, -12)  # neighbours with equal AP stay readable
        ax.annotate(r['name'], (x, y), textcoords='offset points', xytext=offset, fontsize=8)
        if r['name'] == report['recommended']:
            ax.scatter([x], [y], s=220, facecolors='none', edgecolors='tab:green', zorder=4)
    front = [points[i] for i in pareto_front(points)]
    ax.plot(
        [p[0] for p in front], [p[1] for p in front], '--', color='tab:red', label='Pareto front'
    )
    ax.set_xlabel('latency per image, ms (pre + inference + post, mean)')
    ax.set_ylabel(f'{metric} AP (%)')
    ax.set_title(f'{Path(report["config"]).stem}: AP against latency')
    ax.grid(True, alpha=0.3)
    ax.legend(loc='lower right')
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format='png', dpi=110, bbox_inches='tight')
    finally:
        plt.close(fig)
    return write_atomic(path, buffer.getvalue())


def _no_negative_zero(value: float | None) -> float | None:
    """A drop that rounds to zero prints as +0.0, not -0.0."""
    return 0.0 if value is not None and abs(value) < 0.05 else value


def _num(value, spec: str) -> str:
    return '-' if value is None else format(value, spec)
