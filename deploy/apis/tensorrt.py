"""The job behind ``tools/onnx2tensorrt.py``: build an engine from an exported ONNX file and verify
it against ONNX Runtime (always) and PyTorch (with a checkpoint), the way the ONNX verifier does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends.tensorrt.engine import (
    BuildSettings,
    build_engine,
    cuda_device,
    gpu_info,
    import_tensorrt,
    timing_cache_path,
)
from ..backends.tensorrt.profiles import shape_from_cli
from ..errors import BackendError

if TYPE_CHECKING:  # heavy modules, imported where they are used
    import onnx
    import torch
    from mmengine.config import Config

    from ..spec import ModelSpec
    from ..tasks.base import Logger, PathLike


@dataclass
class ConvertResult:
    engine_file: Path
    sidecar: dict
    #: ``{'onnxruntime': rows, 'pytorch': rows}`` of :class:`deploy.export.verify.VerifyRow`
    verify_rows: dict = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return bool(self.verify_rows) and all(
            r.passed for rows in self.verify_rows.values() for r in rows
        )


def cli_input_shapes(
    min_shape: Sequence[int] | None = None,
    opt_shape: Sequence[int] | None = None,
    max_shape: Sequence[int] | None = None,
) -> dict | None:
    """``--min-shape`` / ``--opt-shape`` / ``--max-shape`` as an ``input_shapes`` override of the
    image input (``img_shape`` follows its batch)."""
    spec = dict(
        min_shape=shape_from_cli(min_shape),
        opt_shape=shape_from_cli(opt_shape),
        max_shape=shape_from_cli(max_shape),
    )
    if not any(v is not None for v in spec.values()):
        return None
    return {'input': spec}


@dataclass(frozen=True)
class TensorRTOptions:
    """What an engine build is asked to do (``tools/onnx2tensorrt.py``'s flags); the checks that
    need no file run when it is made.

    Attributes:
        cfg_options: config overrides.
        precision: ``'fp16'`` or None (the config's / the file's).
        input_shapes: profile overrides (:func:`cli_input_shapes`).
        workspace_size: workspace memory-pool limit in bytes (None: the config's or 1 GiB).
        timing_cache: timing cache file (None: one per TensorRT version and GPU next to the
            engine).
        verify: compare the engine with ONNX Runtime (and PyTorch with ``checkpoint``) on
            ``input_img`` and ``test_img`` (or a second view of ``input_img``).
        device: the GPU to build and run on.
        verbose: TensorRT's verbose log.
    """

    cfg_options: dict | None = None
    precision: str | None = None
    input_shapes: dict | None = None
    workspace_size: int | None = None
    timing_cache: PathLike | None = None
    verify: bool = False
    input_img: PathLike | None = None
    test_img: PathLike | None = None
    checkpoint: PathLike | None = None
    device: str = 'cuda'
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.verify and self.input_img is None:
            raise BackendError('--verify needs --input-img')


def convert_onnx_to_tensorrt(
    config: PathLike | Config,
    onnx_file: PathLike,
    output_file: PathLike,
    *,
    logger: Logger = print,
    **options: Any,
) -> ConvertResult:
    """Build ``output_file`` (+ sidecar JSON) from ``onnx_file`` and optionally verify it:
    :func:`build_tensorrt_engine` with ``TensorRTOptions(**options)``."""
    return build_tensorrt_engine(config, onnx_file, output_file, TensorRTOptions(**options), logger)


def build_tensorrt_engine(
    config: PathLike | Config,
    onnx_file: PathLike,
    output_file: PathLike,
    options: TensorRTOptions,
    logger: Logger = print,
) -> ConvertResult:
    """Build ``output_file`` (+ sidecar JSON) from ``onnx_file`` and optionally verify it."""
    import onnx

    from ..config import load_config
    from ..spec import read_onnx_spec

    if isinstance(config, (str, Path)):
        cfg = load_config(config, options.cfg_options)
    else:
        cfg = config
    # Fail fast, before any heavy work, where TensorRT or the GPU is missing.
    trt = import_tensorrt()
    dev = cuda_device(options.device)
    onnx_file, output_file = Path(onnx_file), Path(output_file)
    if not onnx_file.is_file():
        raise BackendError(f'ONNX file not found: {onnx_file}')
    model = onnx.load(str(onnx_file), load_external_data=False)
    spec = read_onnx_spec(model)
    settings = engine_settings(
        cfg,
        model,
        spec,
        output_file,
        tensorrt_version=trt.__version__,
        device=dev,
        precision=options.precision,
        workspace_size=options.workspace_size,
        timing_cache=options.timing_cache,
        input_shapes=options.input_shapes,
        verbose=options.verbose,
    )
    for name, r in settings.profiles.items():
        logger(f'profile {name}: min {list(r.min)} opt {list(r.opt)} max {list(r.max)}')
    sidecar = build_engine(onnx_file, output_file, settings, device=str(dev), logger=logger)
    result = ConvertResult(output_file, sidecar)
    if options.verify:
        images = (options.input_img, options.test_img)
        result.verify_rows = verify_engine(
            cfg, onnx_file, output_file, spec, settings, *images, options.checkpoint, dev, logger
        )
    return result


def engine_settings(
    cfg: Config,
    model: onnx.ModelProto,
    spec: ModelSpec | None,
    output_file: Path,
    *,
    tensorrt_version: str,
    device: torch.device,
    **overrides: Any,
) -> BuildSettings:
    """The engine's build settings: the file's and the config's, ``overrides`` (precision,
    workspace, timing cache, input shapes, verbose) on top; the timing cache defaults to one per
    TensorRT version and GPU next to ``output_file``."""
    from ..backends.tensorrt.runtime import backend_settings

    settings: BuildSettings = backend_settings(cfg, model, spec, **overrides)
    if settings.timing_cache is None:
        gpu_name = gpu_info(device)['name']
        settings.timing_cache = timing_cache_path(output_file, tensorrt_version, gpu_name)
    return settings


def verify_engine(
    cfg: Config,
    onnx_file: PathLike,
    engine_file: PathLike,
    spec: ModelSpec | None,
    settings: BuildSettings,
    input_img: PathLike,
    test_img: PathLike | None,
    checkpoint: PathLike | None,
    device: torch.device,
    logger: Logger = print,
) -> dict:
    """TensorRT against ONNX Runtime, and against eager PyTorch when ``checkpoint`` is given,
    on the input image, a second view of it and (batch range permitting) both as a batch."""
    from ..backends.onnxruntime import OnnxRuntimeBackend
    from ..backends.tensorrt.runtime import TensorRTBackend
    from ..evaluation.parity import match_result_lists
    from ..export.verify import VerifyRow, format_verify_table, verify_backend
    from ..postprocess import outputs_to_results

    cases = verification_cases(cfg, spec, settings, input_img, test_img)
    engine = TensorRTBackend(engine_file, cfg, str(device), logger=logger)
    reference = OnnxRuntimeBackend(onnx_file)
    rows = {'onnxruntime': []}
    for case in cases:
        inputs = case.inputs()
        ref = outputs_to_results(reference(inputs), case.metas)
        test = outputs_to_results(engine(inputs), case.metas)
        rows['onnxruntime'].append(
            VerifyRow(case.name, tuple(case.img.shape), None, None, match_result_lists(ref, test))
        )
    logger('TensorRT vs ONNX Runtime (reference):')
    logger(format_verify_table(rows['onnxruntime'], 'tensorrt'))
    if checkpoint:
        from ..models.loading import init_detector

        detector, _ = init_detector(cfg, checkpoint, device='cpu', logger=logger)
        rows['pytorch'] = verify_backend(detector, engine, cases)
        logger('TensorRT vs PyTorch (reference):')
        logger(format_verify_table(rows['pytorch'], 'tensorrt'))
    else:
        logger('no --checkpoint: the PyTorch comparison is skipped')
    return rows


def verification_cases(
    cfg: Config,
    spec: ModelSpec | None,
    settings: BuildSettings,
    input_img: PathLike,
    test_img: PathLike | None,
) -> list:
    """The input image, a second view of it (``test_img``, or a 3:4 crop scaled down: another
    size and aspect ratio) and, when the image profile allows a batch of 2, both together."""
    from ..config import get_preprocess_cfg
    from ..datasets.pipeline import TestPipeline, collate, load_image
    from ..export.verify import VerifyCase
    from .export import second_view

    fixed = None if spec is None or spec.inputs.dynamic else spec.inputs.static_shape
    pipeline = TestPipeline(get_preprocess_cfg(cfg), fixed_shape=fixed)
    image = load_image(input_img)
    other = load_image(test_img) if test_img else second_view(image)
    first, second = pipeline(image), pipeline(other)
    cases = [VerifyCase('input-img', *collate([first])), VerifyCase('test-img', *collate([second]))]
    image_profile = settings.profiles.get('input')
    if image_profile is not None and image_profile.max[0] >= 2:
        cases.append(VerifyCase('batch of 2', *collate([first, second])))
    return cases
