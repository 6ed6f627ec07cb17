"""Image classification (MMClassification 0.x / MMPretrain 1.x ``ImageClassifier`` configs): top-k
accuracy on an image-folder or annotation-file set, class scores drawn on the image."""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..backends.base import Backend
from ..config.classification import get_classification_dataset_cfg, is_classifier_cfg
from ..datasets.classification import (
    ClassificationDataset,
    ClassificationPipeline,
    load_classification_samples,
)
from ..datasets.pipeline import load_image
from ..errors import ConfigError, ExportError
from ..evaluation.accuracy import accuracy
from ..export.verify import VerifyCase
from ..spec import ModelSpec, PreprocessConfig, ResultFilter
from ..structures import ClassificationResult
from .base import Logger, Pipeline, Task, TestData, TestRequest, TestRun

#: the metric ``--eval`` names for classifiers
CLASSIFICATION_METRICS = ('accuracy',)
DEFAULT_TOPK = (1, 5)


@dataclass
class ClassificationRun(TestRun):
    """Results of a classifier test run: a ``TestRun`` whose ``results`` are
    :class:`ClassificationResult`, with each image's true label and file."""

    gt_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    filenames: list[str] = field(default_factory=list)

    @property
    def scores(self) -> np.ndarray:
        """``[N, C]`` scores of every image, in data-set order."""
        return np.stack([r.scores for r in self.results]) if self.results else np.zeros((0, 0))


def evaluation_topk(cfg: Any, num_classes: int) -> tuple[int, ...]:
    """The k of the top-k accuracies: the config's evaluator (1.x ``test_evaluator.topk``, 0.x
    ``evaluation.metric_options.topk``), else ``(1, 5)``; k above ``num_classes`` is dropped."""
    topk = None
    evaluator = cfg.get('test_evaluator')
    if isinstance(evaluator, Mapping):
        topk = evaluator.get('topk')
    evaluation = cfg.get('evaluation')
    if topk is None and isinstance(evaluation, Mapping):
        topk = (evaluation.get('metric_options') or {}).get('topk')
    topk = DEFAULT_TOPK if topk is None else topk
    topk = (topk,) if isinstance(topk, int) else tuple(int(k) for k in topk)
    kept = tuple(k for k in topk if k <= max(num_classes, 1))
    return kept or (1,)


def _label_map(model_names, data_names) -> np.ndarray | None:
    """Data-set label -> model label (``None``: the same index); names must agree as sets."""
    if model_names is None or data_names is None or tuple(model_names) == tuple(data_names):
        return None
    if sorted(model_names) != sorted(data_names):
        only_model = sorted(set(model_names) - set(data_names))[:5]
        only_data = sorted(set(data_names) - set(model_names))[:5]
        raise ConfigError(
            f'the model classes differ from the data set classes (model only: {only_model}, '
            f'data set only: {only_data}): use the data set the model was trained for, or set '
            'the classes in the config'
        )
    index = {name: i for i, name in enumerate(model_names)}
    return np.asarray([index[name] for name in data_names], np.int64)


class ClassificationTask(Task):
    name = 'classification'
    spec_tasks = ('classification',)

    def handles_config(self, cfg: Any) -> bool:
        return is_classifier_cfg(cfg)

    def pipeline(
        self, preprocess: PreprocessConfig, fixed_shape: tuple[int, int] | None
    ) -> Pipeline:
        return ClassificationPipeline(preprocess, fixed_shape=fixed_shape)

    def check_export(self, *, fp16: bool, preprocess_in_graph: bool, more_backends: bool) -> None:
        if fp16 or preprocess_in_graph:
            flag = '--precision fp16' if fp16 else '--preprocess-in-graph'
            raise ExportError(f'{flag} is not supported for classifiers yet: export without it')
        if more_backends:
            raise ExportError(
                '--verify-backends: classifiers are verified on ONNX Runtime only (drop the others)'
            )

    def verify_export(
        self,
        model: torch.nn.Module,
        onnx_file: Path,
        cases: Sequence[VerifyCase],
        raw_export: Callable[[Path], None] | None,
        precision: str,
    ) -> list:
        """Logits, scores and top-k labels (see :mod:`deploy.export.verify_classifier`)."""
        import onnx

        from ..backends.onnxruntime import OnnxRuntimeBackend
        from ..export.verify_classifier import verify_classifier

        onnx.checker.check_model(str(onnx_file))
        with tempfile.TemporaryDirectory() as tmp:
            raw_file = Path(tmp) / 'raw.onnx'
            raw_export(raw_file)
            return verify_classifier(
                model,
                OnnxRuntimeBackend(onnx_file),
                cases,
                raw_backend=OnnxRuntimeBackend(raw_file),
                k=max(model.head.topk),
            )

    def verify_table(self, rows: list, backend: str) -> str:
        from ..export.verify_classifier import format_classifier_verify_table

        return format_classifier_verify_table(rows, backend)

    def save_pictures(
        self,
        model: torch.nn.Module,
        backend: Backend,
        case: VerifyCase,
        image: np.ndarray,
        output_file: Path,
        logger: Logger,
    ) -> None:
        """The top classes of PyTorch and of ``backend`` on the image."""
        from ..backends.pytorch import PyTorchBackend
        from ..visualization import save_image

        for name, runner in (('pytorch', PyTorchBackend(model)), (backend.name, backend)):
            scores = runner(case.inputs())['scores'][0]
            path = output_file.with_name(f'{output_file.stem}_{name}.png')
            drawn = draw_classification(image, ClassificationResult(scores), model.class_names)
            save_image(path, drawn)
            logger(f'wrote {path}')

    def image_result(
        self, outputs: dict[str, np.ndarray], metas: list[dict], result_filter: ResultFilter | None
    ) -> ClassificationResult:
        return ClassificationResult(outputs['scores'][0])

    def test_data(
        self,
        cfg: Any,
        spec: ModelSpec,
        pipeline: Pipeline,
        result_filter: ResultFilter | None,
        request: TestRequest,
        logger: Logger = print,
    ) -> ClassificationTestData:
        if cfg is None:
            raise ConfigError(
                f'{request.model_file} is a classifier: give its config for the data set'
            )
        return ClassificationTestData(cfg, spec, pipeline, request)


class ClassificationTestData(TestData):
    """The config's image-folder or annotation-file set; top-k accuracy. ``--out`` pickles one
    dict per image (``img_id``, ``filename``, ``gt_label``, ``scores``, ``pred_label``)."""

    def __init__(self, cfg: Any, spec: ModelSpec, pipeline: Pipeline, request: TestRequest) -> None:
        unknown = sorted(set(request.metrics) - set(CLASSIFICATION_METRICS))
        if unknown:
            raise ConfigError(
                f'{request.model_file} is a classifier: evaluate it with --eval accuracy, not '
                f'{", ".join(unknown)}'
            )
        if request.format_only:
            raise ConfigError('--format-only writes COCO detections: a classifier has none')
        data_cfg = get_classification_dataset_cfg(cfg)
        self.samples = load_classification_samples(
            data_cfg['img_prefix'], data_cfg['ann_file'], data_cfg['classes'], data_cfg['key']
        )
        mapping = _label_map(spec.class_names, self.samples.class_names)
        labels = self.samples.labels
        self.gt_all = labels if mapping is None else mapping[labels]
        if spec.num_classes and int(self.gt_all.max()) >= spec.num_classes:
            raise ConfigError(
                f'the data set has label {int(self.gt_all.max())}, but the model predicts '
                f'{spec.num_classes} classes'
            )
        self.dataset = ClassificationDataset(self.samples, pipeline)
        self.cfg, self.spec, self.request = cfg, spec, request

    def batch_results(self, outputs: dict[str, np.ndarray], metas: list[dict]) -> list:
        return [ClassificationResult(np.asarray(row, np.float32)) for row in outputs['scores']]

    def record(
        self, results: list, img_ids: list[int], latency_ms: float, gathered: bool
    ) -> ClassificationRun:
        if not gathered:
            return ClassificationRun(
                results, img_ids, gt_labels=self.gt_all[img_ids], latency_ms=latency_ms
            )
        return ClassificationRun(
            results,
            img_ids,
            class_names=self.spec.class_names or self.samples.class_names,
            latency_ms=latency_ms,
            gt_labels=self.gt_all[img_ids],
            filenames=[self.samples.paths[i] for i in img_ids],
        )

    def finish(self, run: ClassificationRun, logger: Logger) -> None:
        if self.request.metrics:
            topk = evaluation_topk(self.cfg, run.scores.shape[1])
            run.metrics = accuracy(run.scores, run.gt_labels, topk)
            logger(format_accuracy(run.metrics, self.request.backend, len(run.results)))
        show_dir = self.request.show_dir
        if show_dir:
            for result, name in zip(run.results, run.filenames):
                draw_label(name, result, run.class_names, Path(show_dir))
            logger(f'drawings of {len(run.results)} images written to {show_dir}/')

    def results_payload(self, run: ClassificationRun) -> bytes:
        return pickle.dumps(
            [
                dict(
                    img_id=i,
                    filename=name,
                    gt_label=int(gt),
                    scores=r.scores,
                    pred_label=r.label,
                )
                for i, name, gt, r in zip(run.img_ids, run.filenames, run.gt_labels, run.results)
            ]
        )


def format_accuracy(metrics: dict, backend: str, num_images: int) -> str:
    """``accuracy/top1: 95.33  accuracy/top5: 100.00  (onnxruntime, 300 images)``."""
    values = '  '.join(f'{k}: {v:.2f}' for k, v in metrics.items())
    return f'{values}  ({backend}, {num_images} images)'


def draw_classification(
    image: np.ndarray,
    result: ClassificationResult,
    class_names: Sequence[str] | None = None,
    k: int = 3,
) -> np.ndarray:
    """A copy of the BGR ``image`` with the top-``k`` classes and scores written on it."""
    canvas = image.copy()
    scale = max(0.4, min(canvas.shape[:2]) / 400)
    y = 0
    for label in result.topk(min(k, result.scores.size)):
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        text = f'{name} {result.scores[label]:.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(canvas, (0, y), (tw + 4, y + th + base + 4), (0, 0, 0), -1)
        cv2.putText(
            canvas,
            text,
            (2, y + th + 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        y += th + base + 4
    return canvas


def draw_label(
    filename: str, result: ClassificationResult, class_names: Sequence[str] | None, out_dir: Path
) -> Path:
    from ..visualization import save_image

    path = out_dir / (Path(filename).stem + '.jpg')
    save_image(path, draw_classification(load_image(filename), result, class_names))
    return path
