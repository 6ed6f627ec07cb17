"""One-command deploy: config + checkpoint in, one folder out with everything a backend needs.

Steps: export the ONNX file (verified against PyTorch), quantise it when INT8 is asked for,
convert it for the backend (OpenVINO IR ``model.xml`` / ``model.bin``, a TensorRT engine), run
the artefact against PyTorch on a few images (IoU-matched detections and their AP), draw both
side by side, and write ``report.md`` and ``report.json``. Everything is written into a
temporary folder beside the work folder and renamed to it only when every step passed.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .api import Detections
from .errors import ConfigError, DeployError
from .fileio import staging_path
from .progress import Stages
from .tasks.base import Logger, PathLike

#: the precisions each backend can be deployed in
PRECISIONS = {
    'onnxruntime': ('fp32', 'fp16', 'int8'),
    'openvino': ('fp32', 'bf16', 'int8'),
    'tensorrt': ('fp32', 'fp16'),
}
#: the artefact's detections, scored against PyTorch's (AP@[.5:.95]), must reach this
MIN_PARITY_AP = {'fp32': 0.98, 'fp16': 0.9, 'bf16': 0.9, 'int8': 0.7}
BACKEND_TITLES = {'onnxruntime': 'ONNX Runtime', 'openvino': 'OpenVINO', 'tensorrt': 'TensorRT'}
REPORT = 'report.json'


@dataclass(frozen=True)
class DeployOptions:
    """What ``tools/deploy_model.py`` is asked to do.

    Args:
        images: the comparison images (the first is also the export's tracing image and the
            one drawn side by side).
        calib_images, check_images: INT8 calibration and FP32-parity images (``tools/quantize.py``).
        min_parity_ap: the artefact's AP against PyTorch on ``images`` must reach it
            (``None``: :data:`MIN_PARITY_AP` of the precision).
    """

    backend: str
    images: tuple[str, ...]
    precision: str = 'fp32'
    exporter: str = 'dynamo'
    cfg_options: dict | None = None
    calib_images: int = 32
    check_images: int = 8
    score_thr: float = 0.3
    min_parity_ap: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, 'images', tuple(str(i) for i in self.images))
        if self.backend not in PRECISIONS:
            raise ConfigError(
                f'--backend must be one of {", ".join(PRECISIONS)}, got {self.backend!r}'
            )
        if self.precision not in PRECISIONS[self.backend]:
            raise ConfigError(
                f'{self.backend} is deployed in {", ".join(PRECISIONS[self.backend])}, '
                f'not {self.precision}'
            )
        if not self.images:
            raise ConfigError('give at least one comparison image (--images)')

    @property
    def parity_threshold(self) -> float:
        return MIN_PARITY_AP[self.precision] if self.min_parity_ap is None else self.min_parity_ap

    @property
    def device(self) -> str:
        return 'cuda' if self.backend == 'tensorrt' else 'cpu'


@dataclass
class DeployReport:
    """What a deploy did and measured (``report.json``)."""

    config: str
    checkpoint: str
    backend: str
    precision: str
    artefact: str = ''
    files: dict[str, int] = field(default_factory=dict)
    steps: dict[str, dict] = field(default_factory=dict)
    comparison: dict = field(default_factory=dict)
    created: str = ''

    @property
    def passed(self) -> bool:
        return bool(self.comparison.get('passed'))


def require_backend(backend: str) -> None:
    """Refuse in one line, before any work, a backend whose runtime is not installed here."""
    module = {'openvino': 'openvino', 'tensorrt': 'tensorrt'}.get(backend)
    if module and _missing(module):
        raise DeployError(
            f'--backend {backend} needs the Python module {module!r}, which is not installed '
            f'here{" (and an NVIDIA GPU)" if backend == "tensorrt" else ""}: nothing was written'
        )


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ValueError:  # in sys.modules without a spec (a stand-in module): present
        return False


def deploy_model(
    config: PathLike,
    checkpoint: PathLike,
    work_dir: PathLike,
    options: DeployOptions,
    logger: Logger = print,
) -> DeployReport:
    """Run the whole deploy into ``work_dir`` (see the module); returns its report.

    Raises:
        DeployError: a step failed (the work folder is left as it was).
    """
    from .apis.checks import check_input_file

    require_backend(options.backend)
    check_input_file(config, 'config')
    check_input_file(checkpoint, 'checkpoint')
    for image in options.images:
        check_input_file(image, 'image')
    work_dir = Path(work_dir)
    _check_work_dir(work_dir)
    report = DeployReport(str(config), str(checkpoint), options.backend, options.precision)
    job = Deployment(config, checkpoint, options, report, logger)
    with _staged_folder(work_dir) as folder:
        job.run(folder)
    logger(f'deployed to {work_dir}/ ({report.artefact}), report: {work_dir / "report.md"}')
    return report


class Deployment:
    """The steps of one deploy, each writing into the staging folder."""

    def __init__(
        self,
        config: PathLike,
        checkpoint: PathLike,
        options: DeployOptions,
        report: DeployReport,
        logger: Logger,
    ) -> None:
        self.config, self.checkpoint, self.options = config, checkpoint, options
        self.report, self.logger = report, logger

    def run(self, folder: Path) -> None:
        options = self.options
        steps = 3 + int(options.precision == 'int8') + int(options.backend != 'onnxruntime')
        self.stages = Stages(total=steps, logger=self.logger)
        self.folder = folder
        onnx_file = self.export()
        if options.precision == 'int8':
            onnx_file = self.quantize(onnx_file)
        artefact = self.convert(onnx_file)
        self.report.artefact = artefact.name
        self.compare(onnx_file if options.backend == 'openvino' else artefact)
        _remove_caches(self.folder)
        self.write_report()
        if not self.report.passed:
            raise DeployError(
                f'{artefact.name} differs from PyTorch: AP against PyTorch '
                f'{self.report.comparison["parity_ap"]} < {options.parity_threshold} '
                '(see the comparison above); nothing was written'
            )

    def export(self) -> Path:
        from .apis.export import Exporter, ExportOptions

        options = self.options
        out = self.folder / 'model.onnx'
        engines = ('onnxruntime', 'openvino') if options.backend == 'openvino' else ()
        export_options = ExportOptions(
            input_img=options.images[0],
            cfg_options=options.cfg_options,
            dynamic=True,
            exporter=options.exporter,
            verify=True,
            precision='fp16' if options.precision == 'fp16' else 'fp32',
            verify_backends=engines if options.precision == 'fp32' else ('onnxruntime',),
        )
        with self.stages(f'export ({options.exporter}) and verify'):
            result = Exporter(self.config, self.checkpoint, out, export_options, _quiet).run()
        if not result.verified:
            raise DeployError('the export did not pass verification against PyTorch')
        rows = [r for rows in [result.verify_rows, *result.backend_rows.values()] for r in rows]
        self.report.steps['export'] = dict(verified=True, cases=len(rows), file=out.name)
        return out

    def quantize(self, onnx_file: Path) -> Path:
        from .apis.quantize import QuantizeOptions, Quantizer

        options = self.options
        out = self.folder / 'model.int8.onnx'
        quantize_options = QuantizeOptions(
            calib_images=options.calib_images,
            check_images=options.check_images,
            # OpenVINO runs int8 weights in INT8 (uint8 ones in FP32)
            weights='int8' if options.backend == 'openvino' else 'auto',
            cfg_options=options.cfg_options,
        )
        with self.stages('quantise to INT8'):
            result = Quantizer(self.config, onnx_file, out, quantize_options, _quiet).run()
        if options.check_images and not result.passed:
            raise DeployError(
                f'INT8 lost too much against FP32 (parity AP {result.parity_ap}): nothing written'
            )
        self.report.steps['quantize'] = dict(
            parity_ap_vs_fp32=None if result.parity_ap is None else round(result.parity_ap, 4),
            float_layers=result.float_layers,
            quantized_layers=result.quantized_layers,
            file=out.name,
        )
        return out

    def convert(self, onnx_file: Path) -> Path:
        if self.options.backend == 'onnxruntime':
            return onnx_file
        with self.stages(f'convert for {BACKEND_TITLES[self.options.backend]}'):
            if self.options.backend == 'openvino':
                return self.save_openvino_ir(onnx_file)
            return self.build_tensorrt_engine(onnx_file)

    def save_openvino_ir(self, onnx_file: Path) -> Path:
        """``model.xml`` + ``model.bin`` (weights kept in FP32: no FP16 compression)."""
        import openvino as ov

        xml = self.folder / 'model.xml'
        ov.save_model(ov.Core().read_model(str(onnx_file)), str(xml), compress_to_fp16=False)
        self.report.steps['convert'] = dict(ir=[xml.name, xml.with_suffix('.bin').name])
        return xml

    def build_tensorrt_engine(self, onnx_file: Path) -> Path:
        from .apis.tensorrt import convert_onnx_to_tensorrt

        engine = self.folder / 'model.engine'
        convert_onnx_to_tensorrt(
            self.config,
            onnx_file,
            engine,
            cfg_options=self.options.cfg_options,
            precision='fp16' if self.options.precision == 'fp16' else None,
            logger=_quiet,
        )
        self.report.steps['convert'] = dict(engine=engine.name)
        return engine

    def compare(self, model_file: Path) -> None:
        """PyTorch and the artefact on the comparison images: matched detections, their AP, a
        picture of the first image; the IR is checked to give the ONNX file's outputs."""
        from .evaluation.parity import match_result_lists, parity_ap

        options = self.options
        with self.stages(f'compare with PyTorch on {len(options.images)} image(s)'):
            comparison = Comparison(self.config, self.checkpoint, model_file, options)
            refs, tests = comparison.run()
            refs_r, tests_r = [r.as_result() for r in refs], [t.as_result() for t in tests]
            stats = match_result_lists(refs_r, tests_r)
            ap = parity_ap(refs_r, tests_r)
            comparison.save_picture(self.folder / 'comparison.png', refs[0], tests[0])
            if options.backend == 'openvino':
                self.report.steps['convert']['ir_max_abs_diff'] = comparison.check_ir(
                    self.folder / 'model.xml'
                )
        self.report.comparison = dict(
            images=list(options.images),
            pytorch_detections=stats.num_ref,
            backend_detections=stats.num_test,
            matched=stats.matched,
            max_score_err=round(stats.max_score_err, 6),
            max_box_err=round(stats.max_box_err, 4),
            parity_ap=None if ap is None else round(ap, 4),
            min_parity_ap=options.parity_threshold,
            passed=ap is not None and ap >= options.parity_threshold,
            picture='comparison.png',
        )
        self.logger(comparison_line(self.report))

    def write_report(self) -> None:
        from .fileio import write_atomic

        with self.stages('report'):
            self.report.created = datetime.datetime.now().isoformat(timespec='seconds')
            self.report.files = {
                p.name: p.stat().st_size for p in sorted(self.folder.iterdir()) if p.is_file()
            }
            write_atomic(self.folder / REPORT, json.dumps(asdict(self.report), indent=2) + '\n')
            write_atomic(self.folder / 'report.md', report_markdown(self.report))


def comparison_line(report: DeployReport) -> str:
    c = report.comparison
    verdict = 'passed' if report.passed else 'FAILED'
    return (
        f'{report.backend} {report.precision} vs PyTorch: {c["matched"]} of '
        f'{c["pytorch_detections"]} detections matched ({c["backend_detections"]} found), '
        f'AP against PyTorch {c["parity_ap"]} (at least {c["min_parity_ap"]}): {verdict}'
    )


def _quiet(*_args, **_kwargs) -> None:
    """The inner jobs' own progress lines: the deploy prints one line per step instead."""


def _remove_caches(folder: Path) -> None:
    """The runtimes' caches of the files (OpenVINO's ``<file>.openvino``) are not shipped."""
    for path in folder.iterdir():
        if path.is_dir() and path.name.endswith('.openvino'):
            shutil.rmtree(path)


def _check_work_dir(work_dir: Path) -> None:
    """A work folder is new, empty, or an earlier deploy's (which the new one replaces)."""
    if work_dir.exists() and not work_dir.is_dir():
        raise ConfigError(f'--work-dir {work_dir} is a file, not a folder')
    if work_dir.is_dir() and any(work_dir.iterdir()) and not (work_dir / REPORT).is_file():
        raise ConfigError(
            f'--work-dir {work_dir} holds files of something else: choose a new or empty folder'
        )


@contextlib.contextmanager
def _staged_folder(work_dir: Path) -> Iterator[Path]:
    """A temporary folder beside ``work_dir``, renamed to it when the block completes and
    removed if it fails, is interrupted (Ctrl-C) or terminated (SIGTERM)."""
    staging = staging_path(work_dir)
    staging.mkdir()
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield staging
        _replace_folder(staging, work_dir)
    finally:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(staging, ignore_errors=True)


def _replace_folder(staging: Path, work_dir: Path) -> None:
    os.chmod(staging, 0o777 & ~_umask())
    if not work_dir.exists():
        os.replace(staging, work_dir)
        return
    old = staging_path(work_dir)
    os.replace(work_dir, old)  # both renames are on one file system: the gap is tiny
    os.replace(staging, work_dir)
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _raise_interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def side_by_side(left: np.ndarray, right: np.ndarray, titles: tuple[str, str]) -> np.ndarray:
    """Two BGR pictures of one size next to each other, each under a title bar."""
    import cv2

    height, width = left.shape[:2]
    bar = 28
    canvas = np.full((height + bar, 2 * width + 8, 3), 255, np.uint8)
    for k, (picture, title) in enumerate(zip((left, right), titles)):
        x = k * (width + 8)
        canvas[bar:, x : x + width] = picture
        cv2.putText(
            canvas, title, (x + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA
        )
    return canvas


class Comparison:
    """PyTorch (the checkpoint) and the artefact, each loaded once, on the comparison images."""

    def __init__(
        self, config: PathLike, checkpoint: PathLike, model_file: Path, options: DeployOptions
    ) -> None:
        from .api import Detector

        self.options, self.model_file = options, model_file
        self.reference = Detector(checkpoint, config, cfg_options=options.cfg_options, logger=None)
        self.artefact = Detector(
            model_file,
            config,
            backend=options.backend,
            precision=options.precision if options.backend == 'openvino' else None,
            device=options.device,
            cfg_options=options.cfg_options,
            logger=None,
        )

    def run(self) -> tuple[list, list]:
        images = list(self.options.images)
        return self.reference(images), self.artefact(images)

    def save_picture(self, path: Path, reference: Detections, found: Detections) -> None:
        """PyTorch | backend on the first image, under titles saying which is which."""
        from .visualization import save_image

        image, thr = self.options.images[0], self.options.score_thr
        backend = f'{BACKEND_TITLES[self.options.backend]} {self.options.precision}'
        titles = ('PyTorch (checkpoint)', f'{backend} ({self.model_file.name})')
        pictures = (
            self.reference.draw(image, reference, thr),
            self.artefact.draw(image, found, thr),
        )
        save_image(path, side_by_side(*pictures, titles))

    def check_ir(self, xml: Path) -> float:
        """The IR, compiled as the backend compiles the ONNX file, gives its outputs on every
        comparison image; returns the largest difference."""
        import openvino as ov

        from .datasets.pipeline import collate, network_inputs

        runner = self.artefact.backend
        compiled = ov.Core().compile_model(str(xml), 'CPU', runner.config)
        request = compiled.create_infer_request()
        worst = 0.0
        for image in self.options.images:
            inputs = network_inputs(*collate([self.artefact.pipeline(image)]))
            expected = runner(inputs)
            request.infer([inputs[name] for name in runner.input_names])
            for name, port in zip(runner.output_names, compiled.outputs):
                got = np.array(request.get_tensor(port).data)
                if got.shape != expected[name].shape:
                    raise DeployError(
                        f'{xml.name}: output {name} differs in shape from the ONNX file'
                    )
                worst = max(worst, float(np.abs(got - expected[name]).max(initial=0.0)))
        if worst > 1e-3:
            raise DeployError(f'{xml.name} gives other outputs than the ONNX file (by {worst:g})')
        return worst


def report_markdown(report: DeployReport) -> str:
    """The short human report of a deploy."""
    c = report.comparison
    lines = [
        f'# Deploy: {Path(report.config).stem} on {BACKEND_TITLES[report.backend]} '
        f'{report.precision}',
        '',
        f'- config `{report.config}`, checkpoint `{report.checkpoint}`',
        f'- artefact: `{report.artefact}`; created {report.created}',
        f'- export verified against PyTorch ({report.steps["export"]["cases"]} checks)',
    ]
    if 'quantize' in report.steps:
        q = report.steps['quantize']
        lines.append(
            f'- INT8: {q["quantized_layers"]} layers quantised, {len(q["float_layers"])} kept in '
            f'float, AP against FP32 {q["parity_ap_vs_fp32"]}'
        )
    if 'ir_max_abs_diff' in report.steps.get('convert', {}):
        diff = report.steps['convert']['ir_max_abs_diff']
        lines.append(
            f"- OpenVINO IR `model.xml` / `model.bin`: the ONNX file's outputs (max diff {diff:g})"
        )
    lines += [
        '',
        '| images | PyTorch detections | backend detections | matched | max score err | '
        'max box err (px) | AP vs PyTorch | at least | result |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
        f'| {len(c["images"])} | {c["pytorch_detections"]} | {c["backend_detections"]} | '
        f'{c["matched"]} | {c["max_score_err"]} | {c["max_box_err"]} | {c["parity_ap"]} | '
        f'{c["min_parity_ap"]} | {"passed" if report.passed else "FAILED"} |',
        '',
        '![PyTorch | backend](comparison.png)',
        '',
        '| file | bytes |',
        '| --- | --- |',
        *[f'| `{name}` | {size} |' for name, size in report.files.items()],
        '',
    ]
    return '\n'.join(lines)
