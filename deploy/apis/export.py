"""The export job behind ``tools/pytorch2onnx.py``: prepare inputs, export, simplify, verify."""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..backends import build_backend
from ..backends.onnxruntime import OnnxRuntimeBackend
from ..config import get_preprocess_cfg, load_config
from ..config.classification import is_classifier_cfg
from ..datasets.classification import ClassificationPipeline
from ..datasets.pipeline import TestPipeline, collate, load_image
from ..errors import ExportError
from ..export.fp16 import convert_file_to_fp16
from ..export.onnx_export import DEFAULT_EXPORTER, DEFAULT_OPSET, export_onnx
from ..export.options import DEFAULT_PRECISION, PRECISIONS
from ..export.verify import (
    TOLERANCES,
    VerifyCase,
    VerifyRow,
    format_verify_table,
    verify_backend,
)
from ..export.verify_classifier import format_classifier_verify_table
from ..fileio import commit, discard, staging_path
from ..progress import Stages
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


def build_pipeline(cfg, input_shape: tuple[int, int] | None = None):
    """The test pipeline of ``cfg``; with a static ``input_shape (h, w)`` images are fitted into it
    (keep ratio) and padded to exactly that shape. Classifiers get theirs (resize, centre crop)."""
    if is_classifier_cfg(cfg):
        return ClassificationPipeline(get_preprocess_cfg(cfg), fixed_shape=input_shape)
    return TestPipeline(get_preprocess_cfg(cfg), fixed_shape=input_shape)


def default_static_shape(cfg) -> tuple[int, int]:
    """``(h, w)`` holding any landscape image of the test resize: short side x padded long side
    (a classifier's centre crop when it has one)."""
    pre = get_preprocess_cfg(cfg)
    if pre.crop_size is not None:
        return tuple(pre.crop_size)
    div = pre.size_divisor or 1
    if not pre.keep_ratio:  # every image is resized to exactly scale = (w, h)
        return (-(-pre.scale[1] // div) * div, -(-pre.scale[0] // div) * div)
    long_side, short_side = max(pre.scale), min(pre.scale)
    return (-(-short_side // div) * div, -(-long_side // div) * div)


def second_view(image: np.ndarray) -> np.ndarray:
    """Another image size for verification when no ``--test-img`` is given: a 3:4 crop scaled
    down, so the network input differs in size and aspect ratio."""
    h, w = image.shape[:2]
    crop = image[:, : max(2, int(w * 0.75))]
    return cv2.resize(crop, (max(2, int(crop.shape[1] * 0.8)), max(2, int(h * 0.8))))


def export_model(
    config,
    checkpoint,
    output_file='tmp.onnx',
    *,
    input_img,
    test_img=None,
    shape=None,
    opset_version=DEFAULT_OPSET,
    cfg_options=None,
    dynamic=False,
    exporter=None,
    simplify=False,
    skip_postprocess=False,
    verify=False,
    device='cpu',
    strict=True,
    show=False,
    precision=DEFAULT_PRECISION,
    preprocess_in_graph=False,
    verify_backends=('onnxruntime',),
    logger=print,
) -> ExportResult:
    """Export ``config`` + ``checkpoint`` to ONNX and optionally verify it (see the tool's help).

    The file is written under a temporary name next to ``output_file``; only a complete (and,
    with ``verify``, verified) export replaces ``output_file``. A failed verification keeps the
    old file and leaves the new one as ``<stem>.failed-verify.onnx`` for inspection.

    ``precision='fp16'`` converts the exported feature extractor to FP16 (post-processing stays
    FP32, see :mod:`deploy.export.fp16`) and verifies with the FP16 tolerances.
    ``preprocess_in_graph`` exports a graph that takes decoded images (``image [B, H, W, 3]``
    uint8 BGR, any size) and returns boxes in image pixels (:mod:`deploy.ops.preprocess`); its
    verification reports how far the in-graph resize is from OpenCV's.
    ``exporter=None`` takes the model's ``default_exporter`` (the faster one where a model's
    measured export time calls for it, DINO's TorchScript), else :data:`DEFAULT_EXPORTER`.
    ``verify_backends``: the engines the file is verified on (``onnxruntime`` always; e.g.
    ``openvino``, ``openvino:bf16``), each with its own table and the tolerances of the
    precision it computes in.
    """
    # Everything that can be checked in a second is, before a model is built.
    cfg = load_config(config, cfg_options) if isinstance(config, (str, Path)) else config
    output_file = check_output_file(output_file, 'output file')
    check_opset(opset_version)
    shape = check_shape(shape)
    device = check_device(device)
    check_input_file(input_img, '--input-img')
    check_input_file(test_img, '--test-img')
    check_input_file(checkpoint, 'checkpoint')
    if precision not in PRECISIONS:
        raise ExportError(f'--precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    if preprocess_in_graph and skip_postprocess:
        raise ExportError('--preprocess-in-graph needs the post-processed graph')
    if verify and skip_postprocess:
        raise ExportError(
            '--verify compares detections: it needs the post-processed graph '
            '(drop --skip-postprocess)'
        )
    extra_backends = [parse_verify_backend(b) for b in verify_backends or ()]
    extra_backends = [b for b in extra_backends if b != ('onnxruntime', None)]
    image = load_image(input_img)
    other = load_image(test_img) if test_img else second_view(image)

    fp16 = precision == 'fp16'
    stages = Stages(total=2 + int(simplify) + int(verify) + int(fp16), logger=logger)
    with stages('build the model and load the checkpoint'):
        model, cfg = init_detector(cfg, checkpoint, device=device, strict=strict, logger=logger)
    exporter = exporter or getattr(model, 'default_exporter', DEFAULT_EXPORTER)
    classifier = model.spec.task == 'classification'
    if classifier and (fp16 or preprocess_in_graph):
        flag = '--precision fp16' if fp16 else '--preprocess-in-graph'
        raise ExportError(f'{flag} is not supported for classifiers yet: export without it')
    if classifier and extra_backends:
        raise ExportError(
            '--verify-backends: classifiers are verified on ONNX Runtime only (drop the others)'
        )
    static_shape = None if dynamic else tuple(shape or default_static_shape(cfg))
    # A pipeline that resizes every image to one size (keep_ratio=False, e.g. SSD300) gives a
    # graph with a dynamic batch and that fixed size.
    dynamic_size = get_preprocess_cfg(cfg).keep_ratio
    if dynamic and not dynamic_size:
        static_shape = tuple(shape or default_static_shape(cfg))
    pipeline = build_pipeline(cfg, None if dynamic else static_shape)
    first = pipeline(image)
    # Dynamic export traces a batch of 2 (torch.export specialises sizes 0 and 1).
    flipped = image[:, ::-1].copy()
    samples = [first, pipeline(flipped)] if dynamic else [first]
    img, metas = collate(samples)
    img_shape = torch.tensor([m['img_shape'][:2] for m in metas], dtype=torch.float32)
    img, img_shape = img.to(device), img_shape.to(device)
    in_graph = model.spec.preprocess if preprocess_in_graph else None
    if in_graph is not None:  # the example input is the decoded images themselves
        images = [image, flipped] if dynamic else [image]
        img = torch.from_numpy(np.stack(images)).to(device)

    spec = model.spec.replace(producer=producer_versions())
    export_kwargs = dict(
        exporter=exporter,
        opset_version=opset_version,
        dynamic=dynamic,
        dynamic_size=dynamic_size,
        verbose=show,
    )
    shape_text = 'dynamic' if dynamic else f'static {static_shape[0]}x{static_shape[1]}'
    if in_graph is not None:
        shape_text = ('dynamic batch, ' if dynamic else 'batch 1, ') + 'decoded images of any size'
    staged = staging_path(output_file)
    try:
        with stages(
            f'export {type(model).__name__} ({exporter} exporter, opset {opset_version}, '
            f'{shape_text})'
        ):
            export_onnx(
                model,
                img,
                img_shape,
                staged,
                skip_postprocess=skip_postprocess,
                spec=spec,
                preprocess_in_graph=in_graph,
                **export_kwargs,
            )
        if simplify:
            from ..export.simplify import simplify_onnx

            with stages('simplify (onnxsim)'):
                simplify_onnx(staged, dynamic=dynamic, logger=logger)
        if fp16:
            with stages('convert to mixed FP16 (feature extractor FP16, post-processing FP32)'):
                convert_file_to_fp16(staged)
                _check_runs(staged, device)
        result = ExportResult(output_file)
        if verify:
            engines = ', '.join(
                ['ONNX Runtime', *(b + (f' {p}' if p else '') for b, p in extra_backends)]
            )
            with stages(f'verify against PyTorch ({engines})'):
                second = pipeline(other)
                cases = [
                    VerifyCase('input-img', *collate([first]), images=[image]),
                    VerifyCase('test-img', *collate([second]), images=[other]),
                ]
                if dynamic and in_graph is None:
                    cases.append(VerifyCase('batch of 2', *collate([first, second])))
                elif dynamic:  # decoded images of one batch share a size
                    third = pipeline(flipped)
                    cases.append(
                        VerifyCase('batch of 2', *collate([first, third]), images=[image, flipped])
                    )
                if classifier:
                    result.verify_rows = _verify_classifier(
                        model.cpu(), staged, cases, img, img_shape, export_kwargs
                    )
                elif in_graph is not None:
                    result.verify_rows = verify_backend(
                        model.cpu(),
                        OnnxRuntimeBackend(staged),
                        cases,
                        tolerances=TOLERANCES[precision],
                    )
                else:
                    result.verify_rows = _verify(
                        model.cpu(), staged, cases, img, img_shape, export_kwargs, precision
                    )
                for backend, engine_precision in extra_backends:
                    label = backend + (f':{engine_precision}' if engine_precision else '')
                    result.backend_rows[label] = verify_backend(
                        model.cpu(),
                        build_backend(backend, staged, device=device, precision=engine_precision),
                        cases,
                        tolerances=TOLERANCES[engine_precision or precision],
                    )
            if classifier:
                logger(format_classifier_verify_table(result.verify_rows, 'onnxruntime'))
            else:
                logger(format_verify_table(result.verify_rows, 'onnxruntime'))
            for label, rows in result.backend_rows.items():
                logger(format_verify_table(rows, label))
            if in_graph is not None:
                logger(resize_difference(in_graph, [image, other], pipeline))
            if not result.verified:
                kept = output_file.with_name(f'{output_file.stem}.failed-verify.onnx')
                commit(staged, kept)
                result.output_file = kept
                logger(
                    f'verification failed: {output_file} was left as it was; the new export '
                    f'is kept as {kept} for inspection'
                )
                return result
        commit(staged, output_file)
    finally:
        discard(staged)
    logger(f'saved {output_file}')
    if verify and show:
        _save_pictures(model, OnnxRuntimeBackend(output_file), cases[0], image, output_file, logger)
    return result


def _verify(
    model, onnx_file, cases, img, img_shape, export_kwargs, precision='fp32'
) -> list[VerifyRow]:
    """ONNX checker, then every case on ONNX Runtime against the eager model; raw head outputs
    through a second, ``--skip-postprocess`` export in the same precision."""
    import onnx

    onnx.checker.check_model(str(onnx_file))
    with tempfile.TemporaryDirectory() as tmp:
        raw_file = Path(tmp) / 'raw.onnx'
        export_onnx(
            model, img.cpu(), img_shape.cpu(), raw_file, skip_postprocess=True, **export_kwargs
        )
        if precision == 'fp16':
            convert_file_to_fp16(raw_file)
        return verify_backend(
            model,
            OnnxRuntimeBackend(onnx_file),
            cases,
            raw_backend=OnnxRuntimeBackend(raw_file),
            tolerances=TOLERANCES[precision],
        )


def _verify_classifier(model, onnx_file, cases, img, img_shape, export_kwargs):
    """:func:`_verify` for classifiers: logits, scores and top-k labels (see
    :mod:`deploy.export.verify_classifier`)."""
    import onnx

    from ..export.verify_classifier import verify_classifier

    onnx.checker.check_model(str(onnx_file))
    with tempfile.TemporaryDirectory() as tmp:
        raw_file = Path(tmp) / 'raw.onnx'
        export_onnx(
            model, img.cpu(), img_shape.cpu(), raw_file, skip_postprocess=True, **export_kwargs
        )
        return verify_classifier(
            model,
            OnnxRuntimeBackend(onnx_file),
            cases,
            raw_backend=OnnxRuntimeBackend(raw_file),
            k=max(model.head.topk),
        )


def resize_difference(preprocess, images: list[np.ndarray], pipeline: TestPipeline) -> str:
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


def _save_pictures(
    model, backend, case: VerifyCase, image: np.ndarray, output_file: Path, logger
) -> None:
    """Draw the PyTorch and the backend detections of one case side by side on disk."""
    if model.spec.task == 'classification':
        from .classification import save_classification_pictures

        save_classification_pictures(model, backend, case, image, output_file, logger)
        return
    from ..backends.pytorch import PyTorchBackend
    from ..postprocess import outputs_to_results
    from ..visualization import draw_detections, save_image

    for name, runner in (('pytorch', PyTorchBackend(model)), (backend.name, backend)):
        result = outputs_to_results(runner(case.inputs()), case.metas)[0]
        path = output_file.with_name(f'{output_file.stem}_{name}.png')
        save_image(path, draw_detections(image, result, model.class_names))
        logger(f'wrote {path}')
