"""The INT8 job behind ``tools/quantize.py``: calibrate on the config's images, quantise, check.

1. The FP32 file's model spec is checked against the config (:func:`deploy.apis.contract.plan_run`):
   calibration images go through the very pre-processing the model is run with.
2. Calibration images come from the config's *training* set (so the test set a user evaluates
   on is never the one the ranges were fitted to); without one, from the test set.
3. :func:`deploy.onnx_graph.int8.quantize_qdq` (ONNX Runtime's pre-processing and static QDQ
   quantisation) quantises the feature extractor (and the RoI heads), post-processing stays float.
4. **Accuracy check**: the INT8 file's detections are scored against the FP32 file's on further
   held-out images of the same set (the *parity AP*: 1.0 = the same detections). When it is below
   ``min_parity_ap`` the job finds the layers responsible instead of the user: it ranks every
   quantised convolution / matrix product by the signal-to-quantisation-noise ratio of its output
   (ONNX Runtime's ``qdq_loss_debug``), keeps the worst ones in float and quantises again (the
   calibration ranges are cached, so a retry costs no calibration), doubling the count until the
   parity is met or ``max_float_layers`` is reached.

The output's spec records ``precision='int8'`` and ``extra['int8']``: method, images and their
source, per-channel, the float-kept layers, the parity AP reached and the ORT version.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from mmengine.config import Config

from ..backends.onnxruntime import OnnxRuntimeBackend
from ..config import get_test_dataset_cfg, load_config
from ..datasets.coco import load_coco
from ..datasets.pipeline import collate, network_inputs
from ..errors import BackendUnavailable, ConfigError, ExportError
from ..evaluation.parity import parity_ap
from ..fileio import publish, temporary_folder
from ..onnx_graph.int8 import (
    CALIBRATION_METHODS,
    WEIGHT_CHOICES,
    QuantizeSettings,
    preprocess_for_quantization,
    quantize_qdq,
    resolve_weights,
    settings_record,
)
from ..postprocess import outputs_to_results
from ..progress import Stages
from ..spec import read_onnx_spec, write_onnx_spec
from ..tasks.base import Logger, PathLike
from .checks import check_input_file, check_output_file, check_positive
from .contract import plan_run

#: the default accuracy gate: INT8 detections scored against FP32's on held-out images
DEFAULT_MIN_PARITY_AP = 0.7
# Measured: a sound INT8 file scores 0.83-0.92 (boxes move by a pixel or two, which costs AP at
# the strict IoU thresholds of AP@[.5:.95]) with box / mask AP within 0.3 of FP32 on the val set.


@dataclass
class QuantizeResult:
    output_file: Path
    parity_ap: float | None = None
    float_layers: list[str] = field(default_factory=list)
    quantized_layers: int = 0
    attempts: list[dict] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)
    #: the file passed ``verify`` (True without one); False: it was kept as ``output_file``
    #: (``<stem>.failed-verify.onnx``) and the previous file was not replaced
    verified: bool = True

    @property
    def passed(self) -> bool:
        return self.parity_ap is not None and self.parity_ap >= self.calibration.get(
            'min_parity_ap', DEFAULT_MIN_PARITY_AP
        )


def calibration_images(cfg: Config, split: str) -> tuple[list[Path], str]:
    """Image files of the config's ``split`` (``train`` or ``test``) in image-id order, and the
    annotation file they come from. ``train`` falls back to the test set when the config has no
    training set."""
    if split not in ('train', 'test'):
        raise ConfigError(f'--calib-split must be train or test, got {split!r}')
    data = None
    if split == 'train':
        from ..training.data import NoTrainingSetError, train_data_settings

        try:
            train = train_data_settings(cfg)
            data = dict(ann_file=train.ann_file, img_prefix=train.img_prefix)
            key = 'data.train.ann_file'
        except NoTrainingSetError:
            data = None
    if data is None:
        data = get_test_dataset_cfg(cfg)
        key = data['key']
    coco = load_coco(data['ann_file'], key)
    prefix = Path(data['img_prefix'])
    files = [prefix / coco.imgs[i]['file_name'] for i in sorted(coco.getImgIds())]
    return files, str(data['ann_file'])


#: ``--verify`` of a finished INT8 file (its temporary path): True lets it replace the output
Verifier = Callable[[Path], bool]


@dataclass(frozen=True)
class QuantizeOptions:
    """What an INT8 quantisation is asked to do (``tools/quantize.py``'s flags); the checks that
    need no file run when it is made.

    Args:
        calib_images: images whose activation ranges set the scales.
        check_images: further images of the same set on which INT8 is compared with FP32
            (0: no check, no sensitivity search).
        method: ``minmax``, ``entropy`` or ``percentile`` calibration.
        per_channel: per-output-channel weight scales.
        weights: ``auto`` (int8, or uint8 on an x86 CPU without VNNI / AMX), ``int8`` or
            ``uint8`` (see :class:`~deploy.onnx_graph.int8.QuantizeSettings`).
        reduce_range: 7-bit weights (ditto).
        roi_heads: quantise the RoI heads' convolutions and FCs too (two-stage models).
        calib_split: ``train`` (default; the test set if the config has none) or ``test``.
        exclude: node names to keep in float from the start.
        min_parity_ap: the INT8 file's detections, scored against FP32's, must reach this;
            below it, the most sensitive layers are kept in float (up to ``max_float_layers``).
        verify: called with the finished file under its temporary name; ``False`` keeps the
            previous ``output_file`` (verify-before-replace, :func:`deploy.fileio.publish`).
    """

    calib_images: int = 32
    check_images: int = 8
    method: str = 'minmax'
    per_channel: bool = True
    weights: str = 'auto'
    reduce_range: bool = False
    roi_heads: bool = True
    calib_split: str = 'train'
    exclude: tuple[str, ...] = ()
    min_parity_ap: float = DEFAULT_MIN_PARITY_AP
    max_float_layers: int = 8
    cfg_options: dict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, 'exclude', tuple(self.exclude))
        check_positive('--calib-images', self.calib_images, allow_none=False)
        if self.check_images < 0:
            raise ConfigError(f'--check-images must be at least 0, got {self.check_images}')
        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(
                f'--method must be one of {", ".join(CALIBRATION_METHODS)}, got {self.method!r}'
            )
        if self.weights not in WEIGHT_CHOICES:
            choices = ', '.join(WEIGHT_CHOICES)
            raise ConfigError(f'--weights must be one of {choices}, got {self.weights!r}')

    def settings(self, weights: str) -> QuantizeSettings:
        """The quantiser's settings, with the weight type resolved for this machine."""
        return QuantizeSettings(
            method=self.method,
            per_channel=self.per_channel,
            reduce_range=self.reduce_range,
            weights=weights,
            roi_heads=self.roi_heads,
            exclude=self.exclude,
        )


def quantize_model(
    config: Any,
    onnx_file: str | Path,
    output_file: str | Path,
    *,
    logger: Logger = print,
    verify: Verifier | None = None,
    **options: Any,
) -> QuantizeResult:
    """Quantise the FP32 ``onnx_file`` of ``config`` to a static QDQ INT8 ``output_file``:
    :class:`Quantizer` with ``QuantizeOptions(**options)``."""
    job = Quantizer(config, onnx_file, output_file, QuantizeOptions(**options), logger, verify)
    return job.run()


class Quantizer:
    """One quantisation, step by step: check the files, load the FP32 model and its images,
    calibrate and quantise, compare with FP32 (keeping the most sensitive layers in float while
    the parity is short), save.

    ``verify`` is called with the finished file under its temporary name; ``False`` keeps the
    previous ``output_file`` (verify-before-replace, :func:`deploy.fileio.publish`).
    """

    def __init__(
        self,
        config: Any,
        onnx_file: str | Path,
        output_file: str | Path,
        options: QuantizeOptions,
        logger: Logger = print,
        verify: Verifier | None = None,
    ) -> None:
        self.config, self.onnx_file, self.output_file = config, onnx_file, output_file
        self.options, self.logger, self.verify = options, logger, verify

    def run(self) -> QuantizeResult:
        self.check()
        options = self.options
        self.stages = Stages(total=4 if options.check_images else 3, logger=self.logger)
        self.load()
        self.result = QuantizeResult(self.output_file)
        self.result.calibration = self.record = dict(
            images=options.calib_images,
            source=self.source,
            split=options.calib_split,
            check_images=len(self.checks),
            min_parity_ap=options.min_parity_ap,
        )
        with temporary_folder(self.output_file) as tmp:
            self.tmp = Path(tmp)
            self.calibrate()
            if self.checks:
                self.check_parity()
        self.save()
        return self.result

    def check(self) -> None:
        """The files and the FP32 model's spec, before anything is loaded."""
        options, onnx_file = self.options, self.onnx_file
        config = self.config
        if isinstance(config, (str, Path)):
            config = load_config(config, options.cfg_options)
        self.cfg = config
        check_input_file(onnx_file, 'ONNX file')
        self.output_file = check_output_file(self.output_file, '--output-file')
        self.weights, self.weights_reason = resolve_weights(options.weights)
        if Path(onnx_file).resolve() == Path(self.output_file).resolve():
            raise ConfigError('--output-file must differ from the FP32 input file')
        spec = self.spec = read_onnx_spec(onnx_file)
        if spec is not None and spec.task == 'classification':
            raise ExportError(
                f'{onnx_file} is a classifier: tools/quantize.py quantises detectors (its '
                'accuracy check compares detections)'
            )
        if spec is not None and spec.precision != 'fp32':
            raise ExportError(
                f'{onnx_file} is {spec.precision}: quantise the FP32 export '
                '(tools/pytorch2onnx.py without --precision)'
            )

    def load(self) -> None:
        """The FP32 model checked against the config, and the calibration and check images
        through the pre-processing it is run with."""
        options, onnx_file = self.options, self.onnx_file
        with self.stages('load the FP32 model and check it against the config'):
            self.fp32 = OnnxRuntimeBackend(onnx_file)
            plan = plan_run(self.fp32, self.cfg, onnx_file, self.logger)
            if plan.decoded_images:
                raise ExportError(
                    f'{onnx_file} takes decoded images (--preprocess-in-graph): quantise an '
                    'export that takes normalised input'
                )
            files, self.source = calibration_images(self.cfg, options.calib_split)
            calib_images, check_images = options.calib_images, options.check_images
            needed = calib_images + check_images
            if len(files) < calib_images + min(check_images, 1):
                raise ConfigError(
                    f'{self.source} has {len(files)} images; --calib-images {calib_images} and '
                    f'--check-images {check_images} need {needed}'
                )
            pipeline = plan.pipeline()
            self.calib = [_sample(pipeline, f) for f in files[:calib_images]]
            self.checks = [_sample(pipeline, f) for f in files[calib_images:needed]]
        with self.stages(
            'ONNX Runtime quantisation pre-processing (shape inference, optimisation)'
        ):
            self.model = preprocess_for_quantization(onnx.load(str(onnx_file)))

    def calibrate(self) -> None:
        options = self.options
        self.cache = self.tmp / 'calibration.json'
        # the sensitivity search adds float layers to these
        self.requested = self.settings = options.settings(self.weights)
        self.logger(f'weights: {self.weights}; {self.weights_reason}')
        with self.stages(
            f'calibrate ({options.method}, {options.calib_images} images of '
            f'{Path(self.source).name}) and quantise'
        ):
            self.quantized, self.plan8 = _quantize(
                self.model, self.calib, self.settings, self.cache
            )

    def check_parity(self) -> None:
        """INT8 against FP32 on the held-out images; while short of the gate, the worst layers
        in float, doubling their count up to ``max_float_layers``."""
        result, checks, options = self.result, self.checks, self.options
        with self.stages(f'compare INT8 with FP32 on {len(checks)} held-out images'):
            self.reference = [_run(self.fp32, s) for s in checks]
            if not any(len(r) for r in self.reference):
                raise ExportError(
                    f'the FP32 model detects nothing on the {len(checks)} check images: '
                    'the INT8 comparison would prove nothing'
                )
            result.parity_ap = _parity(self.quantized, checks, self.reference, self.tmp)
            result.attempts.append(dict(float_layers=0, parity_ap=result.parity_ap))
            self.logger(f'parity AP of INT8 against FP32: {result.parity_ap:.3f}')
            float_count, ranking = 1, None
            while result.parity_ap < options.min_parity_ap and float_count <= (
                options.max_float_layers
            ):
                if ranking is None:
                    ranking = layer_sensitivity(
                        self.quantized, checks[:2], self.plan8.quantize, workdir=self.tmp
                    )
                    worst = ', '.join(f'{n} ({db:.1f} dB)' for n, db in ranking[:4])
                    self.logger(f'most sensitive layers (quantisation SQNR): {worst}')
                self.try_float_layers(tuple(n for n, _ in ranking[:float_count]), float_count)
                float_count *= 2

    def try_float_layers(self, keep: tuple[str, ...], count: int) -> None:
        """Quantise again with ``keep`` (the ``count`` worst layers) in float; keep the result
        when its parity is better."""
        result, requested = self.result, self.requested
        trial = replace(requested, exclude=requested.exclude + keep)
        candidate, candidate_plan = _quantize(self.model, self.calib, trial, self.cache)
        score = _parity(candidate, self.checks, self.reference, self.tmp)
        result.attempts.append(dict(float_layers=count, parity_ap=score))
        self.logger(f'  {count} layer(s) kept in float: parity AP {score:.3f}')
        if score > result.parity_ap:
            self.quantized, self.plan8, self.settings = candidate, candidate_plan, trial
            result.parity_ap = score

    def save(self) -> None:
        """The INT8 file with its spec (what was quantised, how, and the parity reached)."""
        result, plan8, spec = self.result, self.plan8, self.spec
        result.float_layers = list(plan8.float_compute)
        result.quantized_layers = len(plan8.compute) - len(plan8.float_compute)
        self.record.update(parity_ap=result.parity_ap, attempts=result.attempts)
        if spec is not None:
            write_onnx_spec(
                self.quantized,
                spec.replace(precision='int8', extra=dict(spec.extra, int8=self.int8_record())),
            )
        with temporary_folder(self.output_file) as folder:
            staged = folder / Path(self.output_file).name  # its own name: engines cache beside it
            onnx.save(self.quantized, str(staged))
            result.verified = self.verify is None or bool(self.verify(staged))
            result.output_file = publish(staged, self.output_file, result.verified)
        floats = result.float_layers
        self.logger(
            f'saved {result.output_file}: {result.quantized_layers} convolutions / matrix products '
            f'in INT8, {len(floats)} in float' + (f' ({", ".join(floats)})' if floats else '')
        )
        if self.checks and not result.passed:
            self.logger(
                f'warning: parity AP {result.parity_ap:.3f} is below '
                f'{self.options.min_parity_ap} even with {self.options.max_float_layers} layers '
                'in float; evaluate the file before deploying it'
            )

    def int8_record(self) -> dict:
        import onnxruntime

        return settings_record(
            self.settings,
            calibration=self.record,
            weights_reason=self.weights_reason,
            quantized_layers=self.result.quantized_layers,
            float_layers=self.result.float_layers,
            onnxruntime=onnxruntime.__version__,
            quantized_at=time.strftime('%Y-%m-%dT%H:%M:%S'),
        )


def _sample(pipeline, path: Path) -> dict:
    img, metas = collate([pipeline(path)])
    return dict(inputs=network_inputs(img, metas), metas=metas)


def _run(backend, sample: dict):
    return outputs_to_results(backend(sample['inputs']), sample['metas'])[0]


def _quantize(model, calib, settings, cache):
    return quantize_qdq(model, [s['inputs'] for s in calib], settings, calibration_cache=cache)


def _parity(quantized: onnx.ModelProto, checks, reference, tmp: Path) -> float:
    path = tmp / 'candidate.onnx'
    onnx.save(quantized, str(path))
    int8 = OnnxRuntimeBackend(path)
    tests = [_run(int8, s) for s in checks]
    return float(parity_ap(reference, tests) or 0.0)


def layer_sensitivity(
    int8: onnx.ModelProto, samples: list[dict], layers: list[str], workdir: Path | None = None
) -> list[tuple[str, float]]:
    """``[(node name, SQNR dB)]`` of the quantised compute layers, worst first.

    The noise is measured where it is made: at each layer's quantised input and output, the
    tensor before its ``QuantizeLinear`` against the one after its ``DequantizeLinear``, in the
    INT8 model itself (ONNX Runtime's ``qdq_loss_debug``). Comparing with the FP32 model instead
    would charge a RoI head for the different proposals it was given. A layer's score is the
    lower of its input's and output's signal-to-quantisation-noise ratio.
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from ..onnx_graph.int8 import CalibrationReader
    from ..onnx_graph.mixed_precision import COMPUTE_OPS

    feed_names = {i.name for i in int8.graph.input}
    batches = [{k: v for k, v in s['inputs'].items() if k in feed_names} for s in samples]
    with tempfile.TemporaryDirectory(prefix='sensitivity_', dir=workdir) as tmp:
        src, aug = Path(tmp) / 'int8.onnx', Path(tmp) / 'int8_aug.onnx'
        onnx.save(int8, str(src))
        modify_model_output_intermediate_tensors(str(src), str(aug))
        activations = collect_activations(str(aug), CalibrationReader(batches))
    errors = {
        tensor: compute_signal_to_quantization_noice_ratio(pair['pre_qdq'], pair['post_qdq'])
        for tensor, pair in create_activation_matching(activations).items()
        if pair.get('pre_qdq') and pair.get('post_qdq')
    }
    by_name = {n.name: n for n in int8.graph.node}
    ranking = []
    for name in layers:
        node = by_name.get(name)
        if node is None or node.op_type not in COMPUTE_OPS:
            continue
        scores = [
            errors[t] for t in (node.input[0], node.output[0]) if np.isfinite(errors.get(t, np.nan))
        ]
        if scores:
            ranking.append((name, float(min(scores))))
    ranking.sort(key=lambda item: item[1])
    return ranking


def verify_quantized(
    config: PathLike | Config,
    checkpoint: PathLike,
    int8_file: PathLike,
    *,
    input_img: PathLike,
    backends: Sequence[str] = ('onnxruntime',),
    cfg_options: dict | None = None,
    strict: bool = True,
    logger: Logger = print,
) -> dict[str, list]:
    """The INT8 file against eager PyTorch, as ``--verify`` checks an export: ``input_img``, a
    resized crop of it and (dynamic files) a batch of both, on each of ``backends``
    (``onnxruntime``, ``openvino``), with the INT8 tolerances
    (:data:`deploy.export.verify.TOLERANCES`). Returns ``{backend: rows}`` and logs the tables;
    an engine that cannot run the file in INT8 here is logged as skipped and left out."""
    from ..backends import build_backend
    from ..datasets.pipeline import load_image
    from ..export.verify import TOLERANCES, VerifyCase, format_verify_table, verify_backend
    from .export import second_view
    from .model import init_detector

    cfg = load_config(config, cfg_options) if isinstance(config, (str, Path)) else config
    check_input_file(checkpoint, 'checkpoint')
    check_input_file(input_img, '--input-img')
    model, cfg = init_detector(cfg, checkpoint, strict=strict, logger=lambda *a: None)
    tables = {}
    image = load_image(input_img)
    other = second_view(image)
    for name in backends:
        try:
            runner = build_backend(name, int8_file, cfg=cfg)
        except BackendUnavailable as err:
            # e.g. OpenVINO and a uint8-weight file: this engine does not run it in INT8, which
            # is no verdict on the file (as the regression job reports such rows as skipped)
            logger(f'{name} int8: skipped: {err}')
            continue
        plan = plan_run(runner, cfg, int8_file, logger=lambda *a: None)
        pipeline = plan.pipeline()
        first, second = pipeline(image), pipeline(other)
        cases = [
            VerifyCase('input-img', *collate([first]), images=[image]),
            VerifyCase('test-img', *collate([second]), images=[other]),
        ]
        if plan.max_batch is None:
            cases.append(VerifyCase('batch of 2', *collate([first, second])))
        rows = verify_backend(model.cpu(), runner, cases, tolerances=TOLERANCES['int8'])
        logger(format_verify_table(rows, f'{name} int8'))
        tables[name] = rows
    return tables
