"""The export job behind ``tools/pytorch2onnx.py``: prepare inputs, export, simplify, verify."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..backends import build_backend
from ..backends.onnxruntime import OnnxRuntimeBackend
from ..config import get_preprocess_cfg, load_config
from ..datasets.pipeline import TestPipeline, collate, load_image
from ..errors import ExportError
from ..export.fp16 import convert_file_to_fp16
from ..export.onnx_export import DEFAULT_EXPORTER, DEFAULT_OPSET, export_onnx
from ..export.options import DEFAULT_PRECISION, PRECISIONS
from ..export.verify import TOLERANCES, VerifyCase, VerifyRow, verify_backend
from ..fileio import commit, discard, publish, staging_path
from ..progress import Stages
from ..spec import PreprocessConfig
from ..tasks import Task, task_of_config, task_of_spec
from ..tasks.base import Logger
from .checks import (
    check_device,
    check_input_file,
    check_opset,
    check_output_file,
    check_shape,
)
from .model import init_detector


def producer_versions() -> dict:
    """Versions of the tools that make a model file (stored in its spec)."""
    import onnx

    from .. import __version__

    return dict(deploy=__version__, torch=torch.__version__, onnx=onnx.__version__)


@dataclass
class ExportResult:
    output_file: Path
    verify_rows: list[VerifyRow] | None = None
    #: rows of the further ``verify_backends`` (``openvino``, ``openvino:bf16``, ...)
    backend_rows: dict[str, list[VerifyRow]] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return (
            self.verify_rows is not None
            and all(r.passed for r in self.verify_rows)
            and all(r.passed for rows in self.backend_rows.values() for r in rows)
        )


def parse_verify_backend(name: str) -> tuple[str, str | None]:
    """``'openvino:bf16'`` -> ``('openvino', 'bf16')``; ``'onnxruntime'`` -> ``(.., None)``."""
    from ..backends import BACKENDS, PRECISION_BACKENDS

    backend, _, precision = name.partition(':')
    if backend not in BACKENDS or backend in ('pytorch', 'tensorrt'):
        raise ExportError(
            f'--verify-backends: unknown backend {backend!r} (onnxruntime, openvino, openvino:bf16)'
        )
    if precision and backend not in PRECISION_BACKENDS:
        raise ExportError(f'--verify-backends: {backend} takes no precision ({name!r})')
    return backend, precision or None


def build_pipeline(cfg: Any, input_shape: tuple[int, int] | None = None):
    """The test pipeline of ``cfg``; with a static ``input_shape (h, w)`` images are fitted into it
    (keep ratio) and padded to exactly that shape. Classifiers get theirs (resize, centre crop)."""
    return task_of_config(cfg).pipeline(get_preprocess_cfg(cfg), input_shape)


def default_static_shape(cfg: Any) -> tuple[int, int]:
    """``(h, w)`` holding any landscape image of the test resize: short side x padded long side
    (a classifier's centre crop when it has one)."""
    pre = get_preprocess_cfg(cfg)
    if pre.crop_size is not None:
        return tuple(pre.crop_size)
    div = pre.size_divisor or 1
    if not pre.keep_ratio:  # every image is resized to exactly scale = (w, h)
        return (-(-pre.scale[1] // div) * div, -(-pre.scale[0] // div) * div)
    long_side, short_side = max(pre.scale), min(pre.scale)
    if pre.pad_to_square:
        short_side = long_side
    return (-(-short_side // div) * div, -(-long_side // div) * div)


def second_view(image: np.ndarray) -> np.ndarray:
    """Another image size for verification when no ``--test-img`` is given: a 3:4 crop scaled
    down, so the network input differs in size and aspect ratio."""
    h, w = image.shape[:2]
    crop = image[:, : max(2, int(w * 0.75))]
    return cv2.resize(crop, (max(2, int(crop.shape[1] * 0.8)), max(2, int(h * 0.8))))


@dataclass(frozen=True)
class ExportOptions:
    """What an export is asked to do (``tools/pytorch2onnx.py``'s flags); the checks that need
    no file run when it is made.

    ``precision='fp16'`` converts the exported feature extractor to FP16 (post-processing stays
    FP32, see :mod:`deploy.export.fp16`) and verifies with the FP16 tolerances.
    ``preprocess_in_graph`` exports a graph that takes decoded images (``image [B, H, W, 3]``
    uint8 BGR, any size) and returns boxes in image pixels (:mod:`deploy.ops.preprocess`); its
    verification reports how far the in-graph resize is from OpenCV's.
    ``exporter=None`` takes the model's ``default_exporter`` (the faster one where a model's
    measured export time calls for it: TorchScript for DINO, RetinaNet and Faster R-CNN), else
    :data:`DEFAULT_EXPORTER`.
    ``verify_backends``: the engines the file is verified on (``onnxruntime`` always; e.g.
    ``openvino``, ``openvino:bf16``), each with its own table and the tolerances of the
    precision it computes in.
    """

    input_img: str | Path
    test_img: str | Path | None = None
    shape: tuple[int, ...] | list[int] | None = None
    opset_version: int = DEFAULT_OPSET
    cfg_options: dict | None = None
    dynamic: bool = False
    #: ``None``: the model's ``default_exporter`` (TorchScript for DINO, RetinaNet, Faster
    #: R-CNN), else DEFAULT_EXPORTER
    exporter: str | None = None
    simplify: bool = False
    skip_postprocess: bool = False
    verify: bool = False
    device: str = 'cpu'
    strict: bool = True
    show: bool = False
    precision: str = DEFAULT_PRECISION
    preprocess_in_graph: bool = False
    verify_backends: tuple[str, ...] = ('onnxruntime',)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'verify_backends', tuple(self.verify_backends or ()))
        if self.precision not in PRECISIONS:
            raise ExportError(
                f'--precision must be one of {", ".join(PRECISIONS)}, got {self.precision!r}'
            )
        if self.preprocess_in_graph and self.skip_postprocess:
            raise ExportError('--preprocess-in-graph needs the post-processed graph')
        if self.verify and self.skip_postprocess:
            raise ExportError(
                '--verify compares detections: it needs the post-processed graph '
                '(drop --skip-postprocess)'
            )
        for name in self.verify_backends:  # an unknown engine is named now
            parse_verify_backend(name)

    @property
    def more_backends(self) -> list[tuple[str, str | None]]:
        """The engines besides ONNX Runtime FP32 to verify on: ``(backend, precision)``."""
        engines = [parse_verify_backend(b) for b in self.verify_backends]
        return [b for b in engines if b != ('onnxruntime', None)]

    @property
    def fp16(self) -> bool:
        return self.precision == 'fp16'


def export_model(
    config: Any,
    checkpoint: str | Path,
    output_file: str | Path = 'tmp.onnx',
    *,
    logger: Logger = print,
    **options: Any,
) -> ExportResult:
    """Export ``config`` + ``checkpoint`` to ONNX and optionally verify it: :class:`Exporter`
    with ``ExportOptions(**options)`` (see the tool's help)."""
    return Exporter(config, checkpoint, output_file, ExportOptions(**options), logger).run()


class Exporter:
    """One export, step by step: check, build the model, make the example inputs, export,
    simplify / convert, verify, then commit the file.

    The file is written under a temporary name next to ``output_file``; only a complete (and,
    with ``verify``, verified) export replaces ``output_file``. A failed verification keeps the
    old file and leaves the new one as ``<stem>.failed-verify.onnx`` for inspection.
    """

    def __init__(
        self,
        config: Any,
        checkpoint: str | Path,
        output_file: str | Path,
        options: ExportOptions,
        logger: Logger = print,
    ) -> None:
        self.config, self.checkpoint, self.output_file = config, checkpoint, output_file
        self.options, self.logger = options, logger

    def run(self) -> ExportResult:
        self.check()
        options = self.options
        steps = 2 + int(options.simplify) + int(options.verify) + int(options.fp16)
        self.stages = Stages(total=steps, logger=self.logger)
        self.build_model()
        self.make_inputs()
        staged = staging_path(self.output_file)
        try:
            self.export(staged)
            result = ExportResult(self.output_file)
            if options.verify and not self.verify(staged, result):
                before = 'was left as it was' if self.output_file.exists() else 'was not written'
                kept = result.output_file = publish(staged, self.output_file, verified=False)
                self.logger(
                    f'verification failed: {self.output_file} {before}; the new '
                    f'export is kept as {kept} for inspection'
                )
                return result
            commit(staged, self.output_file)
        finally:
            discard(staged)
        self.logger(f'saved {self.output_file}')
        if options.verify and options.show:
            backend = OnnxRuntimeBackend(self.output_file)
            self.task.save_pictures(
                self.model, backend, self.cases[0], self.image, self.output_file, self.logger
            )
        return result

    def check(self) -> None:
        """Everything that can be checked in a second is, before a model is built."""
        options, config = self.options, self.config
        if isinstance(config, (str, Path)):
            config = load_config(config, options.cfg_options)
        self.cfg = config
        self.output_file = check_output_file(self.output_file, 'output file')
        check_opset(options.opset_version)
        self.shape = check_shape(options.shape)
        self.device = check_device(options.device)
        check_input_file(options.input_img, '--input-img')
        check_input_file(options.test_img, '--test-img')
        check_input_file(self.checkpoint, 'checkpoint')
        self.image = load_image(options.input_img)
        self.other = load_image(options.test_img) if options.test_img else second_view(self.image)

    def build_model(self) -> None:
        options = self.options
        with self.stages('build the model and load the checkpoint'):
            self.model, self.cfg = init_detector(
                self.cfg,
                self.checkpoint,
                device=self.device,
                strict=options.strict,
                logger=self.logger,
            )
        self.exporter = options.exporter or getattr(
            self.model, 'default_exporter', DEFAULT_EXPORTER
        )
        self.task: Task = task_of_spec(self.model.spec)
        self.task.check_export(
            fp16=options.fp16,
            preprocess_in_graph=options.preprocess_in_graph,
            more_backends=bool(options.more_backends),
        )

    def make_inputs(self) -> None:
        """The example batch the graph is traced with, and the pipeline that makes it."""
        dynamic, cfg = self.options.dynamic, self.cfg
        self.static_shape = None if dynamic else tuple(self.shape or default_static_shape(cfg))
        # A pipeline that resizes every image to one size (keep_ratio=False, e.g. SSD300) gives a
        # graph with a dynamic batch and that fixed size.
        self.dynamic_size = get_preprocess_cfg(cfg).keep_ratio
        if dynamic and not self.dynamic_size:
            self.static_shape = tuple(self.shape or default_static_shape(cfg))
        # A graph with the pre-processing inside resizes by the config's rule at any image size:
        # its reference is PyTorch's own pipeline, not the static canvas
        # (deploy.datasets.static_fit).
        in_graph = self.options.preprocess_in_graph
        self.pipeline = build_pipeline(cfg, None if dynamic or in_graph else self.static_shape)
        self.first = self.pipeline(self.image)
        # Dynamic export traces a batch of 2 (torch.export specialises sizes 0 and 1).
        self.flipped = self.image[:, ::-1].copy()
        samples = [self.first, self.pipeline(self.flipped)] if dynamic else [self.first]
        img, metas = collate(samples)
        img_shape = torch.tensor([m['img_shape'][:2] for m in metas], dtype=torch.float32)
        self.img, self.img_shape = img.to(self.device), img_shape.to(self.device)
        self.in_graph = self.model.spec.preprocess if self.options.preprocess_in_graph else None
        if self.in_graph is not None:  # the example input is the decoded images themselves
            images = [self.image, self.flipped] if dynamic else [self.image]
            self.img = torch.from_numpy(np.stack(images)).to(self.device)

    def export_kwargs(self) -> dict:
        options = self.options
        return dict(
            exporter=self.exporter,
            opset_version=options.opset_version,
            dynamic=options.dynamic,
            dynamic_size=self.dynamic_size,
            verbose=options.show,
        )

    def export(self, staged: Path) -> None:
        """Export to ``staged``, then simplify and convert it as asked."""
        options, model = self.options, self.model
        shape_text = 'dynamic' if options.dynamic else 'static {}x{}'.format(*self.static_shape)
        if self.in_graph is not None:
            batch = 'dynamic batch, ' if options.dynamic else 'batch 1, '
            shape_text = batch + 'decoded images of any size'
        with self.stages(
            f'export {type(model).__name__} ({self.exporter} exporter, opset '
            f'{options.opset_version}, {shape_text})'
        ):
            export_onnx(
                model,
                self.img,
                self.img_shape,
                staged,
                skip_postprocess=options.skip_postprocess,
                spec=model.spec.replace(producer=producer_versions()),
                preprocess_in_graph=self.in_graph,
                **self.export_kwargs(),
            )
        if options.simplify:
            from ..export.simplify import simplify_onnx

            with self.stages('simplify (onnxsim)'):
                simplify_onnx(staged, dynamic=options.dynamic, logger=self.logger)
        if options.fp16:
            with self.stages(
                'convert to mixed FP16 (feature extractor FP16, post-processing FP32)'
            ):
                convert_file_to_fp16(staged)
                _check_runs(staged, self.device)

    def verification_cases(self) -> list[VerifyCase]:
        first, image, other = self.first, self.image, self.other
        second = self.pipeline(other)
        cases = [
            VerifyCase('input-img', *collate([first]), images=[image]),
            VerifyCase('test-img', *collate([second]), images=[other]),
        ]
        if self.options.dynamic and self.in_graph is None:
            cases.append(VerifyCase('batch of 2', *collate([first, second])))
        elif self.options.dynamic:  # decoded images of one batch share a size
            third = self.pipeline(self.flipped)
            images = [image, self.flipped]
            cases.append(VerifyCase('batch of 2', *collate([first, third]), images=images))
        return cases

    def verify(self, staged: Path, result: ExportResult) -> bool:
        """Verify ``staged`` against PyTorch on every engine asked for; log the tables."""
        options, model = self.options, self.model.cpu()
        more = options.more_backends
        engines = ', '.join(['ONNX Runtime', *(b + (f' {p}' if p else '') for b, p in more)])
        with self.stages(f'verify against PyTorch ({engines})'):
            self.cases = self.verification_cases()
            result.verify_rows = self.task.verify_export(
                model,
                staged,
                self.cases,
                None if self.in_graph is not None else self.raw_export,
                options.precision,
            )
            for backend, engine_precision in more:
                label = backend + (f':{engine_precision}' if engine_precision else '')
                engine = build_backend(
                    backend, staged, device=self.device, precision=engine_precision
                )
                result.backend_rows[label] = verify_backend(
                    model,
                    engine,
                    self.cases,
                    tolerances=TOLERANCES[engine_precision or options.precision],
                )
        self.logger(self.task.verify_table(result.verify_rows, 'onnxruntime'))
        for label, rows in result.backend_rows.items():
            self.logger(self.task.verify_table(rows, label))
        if self.in_graph is not None:
            images = [self.image, self.other]
            self.logger(resize_difference(self.in_graph, images, self.pipeline))
        return result.verified

    def raw_export(self, path: Path) -> None:
        """The same model without post-processing (its raw head tensors), on the CPU."""
        export_onnx(
            self.model,
            self.img.cpu(),
            self.img_shape.cpu(),
            path,
            skip_postprocess=True,
            **self.export_kwargs(),
        )


def resize_difference(
    preprocess: PreprocessConfig, images: list[np.ndarray], pipeline: TestPipeline
) -> str:
    """How far the in-graph pre-processing is from the OpenCV pipeline on ``images``: the
    largest and mean absolute difference in pixel values (0..255) over each real image area."""
    from ..ops.preprocess import preprocess_image

    worst, total, count = 0.0, 0.0, 0
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    for image in images:
        reference, meta = pipeline(image)
        in_graph, img_shape, _ = preprocess_image(
            torch.from_numpy(np.ascontiguousarray(image))[None],
            preprocess.scale,
            preprocess.keep_ratio,
            preprocess.size_divisor,
            preprocess.pad_value,
            preprocess.mean,
            preprocess.std,
            preprocess.to_rgb,
        )
        h, w = meta['img_shape']
        if tuple(int(v) for v in img_shape[0]) != (h, w):
            size = tuple(int(v) for v in img_shape[0])
            return f'in-graph pre-processing resized to {size}, OpenCV to {(h, w)}'
        diff = ((in_graph[0, :, :h, :w] - reference[:, :h, :w]).abs() * std).flatten()
        worst = max(worst, float(diff.max()))
        total, count = total + float(diff.sum()), count + diff.numel()
    return (
        f'in-graph pre-processing vs the OpenCV pipeline: network inputs differ by at most '
        f'{worst:.2g} (mean {total / max(count, 1):.2g}) pixel values, same resized sizes'
    )


def _check_runs(onnx_file: Path, device: str) -> None:
    """Load a converted file on ``device``'s ONNX Runtime provider: a part that cannot run in
    the requested precision there is named now, not at deployment."""
    from ..errors import BackendError

    try:
        OnnxRuntimeBackend(onnx_file, device=device)
    except BackendError as err:
        raise ExportError(
            f'the FP16 model cannot run on {device} with ONNX Runtime ({err}); export with '
            '--precision fp32 for this device'
        ) from None
