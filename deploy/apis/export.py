"""The export job behind ``tools/pytorch2onnx.py``: prepare inputs, export, simplify, verify."""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..backends.onnxruntime import OnnxRuntimeBackend
from ..config import get_preprocess_cfg, get_test_cfg
from ..datasets.pipeline import TestPipeline, collate, load_image
from ..errors import ExportError
from ..export.metadata import build_metadata
from ..export.onnx_export import DEFAULT_EXPORTER, DEFAULT_OPSET, export_onnx
from ..export.verify import VerifyCase, VerifyRow, format_verify_table, verify_backend
from .model import init_detector


@dataclass
class ExportResult:
    output_file: Path
    verify_rows: list[VerifyRow] | None = None

    @property
    def verified(self) -> bool:
        return self.verify_rows is not None and all(r.passed for r in self.verify_rows)


def build_pipeline(cfg, input_shape: tuple[int, int] | None = None) -> TestPipeline:
    """The test pipeline of ``cfg``; with a static ``input_shape (h, w)`` images are fitted into it
    (keep ratio) and padded to exactly that shape."""
    return TestPipeline(get_preprocess_cfg(cfg), fixed_shape=input_shape)


def default_static_shape(cfg) -> tuple[int, int]:
    """``(h, w)`` holding any landscape image of the test resize: short side x padded long side."""
    pre = get_preprocess_cfg(cfg)
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
    exporter=DEFAULT_EXPORTER,
    simplify=False,
    skip_postprocess=False,
    verify=False,
    device='cpu',
    strict=False,
    show=False,
    logger=print,
) -> ExportResult:
    """Export ``config`` + ``checkpoint`` to ONNX and optionally verify it (see the tool's help)."""
    model, cfg = init_detector(
        config, checkpoint, device=device, cfg_options=cfg_options, strict=strict, logger=logger
    )
    if shape is not None and len(shape) == 1:
        shape = (shape[0], shape[0])
    static_shape = None if dynamic else tuple(shape or default_static_shape(cfg))
    # A pipeline that resizes every image to one size (keep_ratio=False, e.g. SSD300) gives a
    # graph with a dynamic batch and that fixed size.
    dynamic_size = get_preprocess_cfg(cfg).keep_ratio
    if dynamic and not dynamic_size:
        static_shape = tuple(shape or default_static_shape(cfg))
    pipeline = build_pipeline(cfg, None if dynamic else static_shape)
    image = load_image(input_img)
    first = pipeline(image)
    # Dynamic export traces a batch of 2 (torch.export specialises sizes 0 and 1).
    samples = [first, pipeline(image[:, ::-1].copy())] if dynamic else [first]
    img, metas = collate(samples)
    img_shape = torch.tensor([m['img_shape'][:2] for m in metas], dtype=torch.float32)
    img, img_shape = img.to(device), img_shape.to(device)

    metadata = build_metadata(
        model_type=type(model).__name__,
        class_names=model.class_names,
        preprocess=get_preprocess_cfg(cfg),
        input_shape=static_shape,
        dynamic=dynamic,
        test_cfg=get_test_cfg(cfg),
        opset=opset_version,
        exporter=exporter,
        input_names=(),
        output_names=(),
        dynamic_axes={},
        skip_postprocess=skip_postprocess,
    )
    export_kwargs = dict(
        exporter=exporter,
        opset_version=opset_version,
        dynamic=dynamic,
        dynamic_size=dynamic_size,
        verbose=show,
    )
    output_file = Path(output_file)
    logger(
        f'exporting {type(model).__name__} with the {exporter} exporter (opset '
        f'{opset_version}, {"dynamic" if dynamic else "static " + str(static_shape)}) ...'
    )
    export_onnx(
        model,
        img,
        img_shape,
        output_file,
        skip_postprocess=skip_postprocess,
        metadata=metadata,
        **export_kwargs,
    )
    if simplify:
        from ..export.simplify import simplify_onnx

        simplify_onnx(output_file, dynamic=dynamic, logger=logger)
    logger(f'saved {output_file}')
    result = ExportResult(output_file)
    if not verify:
        return result

    import onnx

    onnx.checker.check_model(str(output_file))
    if skip_postprocess:
        raise ExportError(
            '--verify compares detections: it needs the post-processed graph '
            '(drop --skip-postprocess)'
        )
    cases = [VerifyCase('input-img', *collate([first]))]
    other = load_image(test_img) if test_img else second_view(image)
    second = pipeline(other)
    cases.append(VerifyCase('test-img', *collate([second])))
    if dynamic:
        cases.append(VerifyCase('batch of 2', *collate([first, second])))
    model_cpu = model.cpu()
    with tempfile.TemporaryDirectory() as tmp:
        raw_file = Path(tmp) / 'raw.onnx'
        export_onnx(
            model_cpu, img.cpu(), img_shape.cpu(), raw_file, skip_postprocess=True, **export_kwargs
        )
        backend = OnnxRuntimeBackend(output_file)
        rows = verify_backend(model_cpu, backend, cases, raw_backend=OnnxRuntimeBackend(raw_file))
        if show:
            _save_pictures(model_cpu, backend, cases[0], image, output_file, logger)
    logger(format_verify_table(rows, 'onnxruntime'))
    result.verify_rows = rows
    return result


def _save_pictures(
    model, backend, case: VerifyCase, image: np.ndarray, output_file: Path, logger
) -> None:
    """Draw the PyTorch and the backend detections of one case side by side on disk."""
    from ..backends.pytorch import PyTorchBackend
    from ..postprocess import outputs_to_results
    from ..visualization import draw_detections, save_image

    for name, runner in (('pytorch', PyTorchBackend(model)), (backend.name, backend)):
        result = outputs_to_results(runner(case.inputs()), case.metas)[0]
        path = output_file.with_name(f'{output_file.stem}_{name}.png')
        save_image(path, draw_detections(image, result, model.class_names))
        logger(f'wrote {path}')
