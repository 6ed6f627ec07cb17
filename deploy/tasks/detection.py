"""Detection (boxes, and masks for instance segmentation): the task of every detector config."""

from __future__ import annotations

import json
import pickle
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backends.base import Backend
from ..config import get_test_dataset_cfg
from ..config.classification import is_classifier_cfg
from ..datasets.coco import CocoDetectionDataset
from ..datasets.pipeline import TestPipeline, load_image
from ..errors import ConfigError, ImageError
from ..evaluation.class_map import resolve_class_map
from ..evaluation.class_map_report import describe_class_map, left_out_line
from ..evaluation.coco_check import check_coco_annotations, check_coco_ids, missing_image_files
from ..export.verify import VerifyCase
from ..postprocess import outputs_to_results
from ..spec import ModelSpec, PreprocessConfig, ResultFilter
from ..structures import DetectionResult
from .base import Logger, Pipeline, Task, TestData, TestRequest, TestRun, TestSet


class DetectionTask(Task):
    name = 'detection'
    spec_tasks = ('detection', 'instance-segmentation')

    def handles_config(self, cfg: Any) -> bool:
        return not is_classifier_cfg(cfg)

    def pipeline(
        self, preprocess: PreprocessConfig, fixed_shape: tuple[int, int] | None
    ) -> Pipeline:
        return TestPipeline(preprocess, fixed_shape=fixed_shape)

    def check_export(self, *, fp16: bool, preprocess_in_graph: bool, more_backends: bool) -> None:
        """Every export option applies to detectors."""

    def verify_export(
        self,
        model: torch.nn.Module,
        onnx_file: Path,
        cases: Sequence[VerifyCase],
        raw_export: Callable[[Path], None] | None,
        precision: str,
    ) -> list:
        """Detections on every case; raw head outputs too, through a second export without
        post-processing in the same precision (``raw_export``; ``None``: detections alone)."""
        import onnx

        from ..backends.onnxruntime import OnnxRuntimeBackend
        from ..export.fp16 import convert_file_to_fp16
        from ..export.verify import TOLERANCES, verify_backend

        if raw_export is None:
            return verify_backend(
                model, OnnxRuntimeBackend(onnx_file), cases, tolerances=TOLERANCES[precision]
            )
        onnx.checker.check_model(str(onnx_file))
        with tempfile.TemporaryDirectory() as tmp:
            raw_file = Path(tmp) / 'raw.onnx'
            raw_export(raw_file)
            if precision == 'fp16':
                convert_file_to_fp16(raw_file)
            return verify_backend(
                model,
                OnnxRuntimeBackend(onnx_file),
                cases,
                raw_backend=OnnxRuntimeBackend(raw_file),
                tolerances=TOLERANCES[precision],
            )

    def verify_table(self, rows: list, backend: str) -> str:
        from ..export.verify import format_verify_table

        return format_verify_table(rows, backend)

    def save_pictures(
        self,
        model: torch.nn.Module,
        backend: Backend,
        case: VerifyCase,
        image: np.ndarray,
        output_file: Path,
        logger: Logger,
    ) -> None:
        from ..backends.pytorch import PyTorchBackend
        from ..visualization import draw_detections, save_image

        for name, runner in (('pytorch', PyTorchBackend(model)), (backend.name, backend)):
            result = outputs_to_results(runner(case.inputs()), case.metas)[0]
            path = output_file.with_name(f'{output_file.stem}_{name}.png')
            save_image(path, draw_detections(image, result, model.class_names))
            logger(f'wrote {path}')

    def image_result(
        self, outputs: dict[str, np.ndarray], metas: list[dict], result_filter: ResultFilter | None
    ) -> DetectionResult:
        return outputs_to_results(outputs, metas, result_filter)[0]

    def test_data(
        self,
        cfg: Any,
        spec: ModelSpec,
        pipeline: Pipeline,
        result_filter: ResultFilter | None,
        request: TestRequest,
        logger: Logger = print,
    ) -> DetectionTestData:
        return DetectionTestData(cfg, spec, pipeline, request, result_filter, logger)


def dataset_paths(cfg: Any, test_set: TestSet | None) -> dict:
    """``ann_file``, ``img_prefix`` and the flag or config key that names them."""
    if test_set is not None:
        return dict(ann_file=test_set.ann_file, img_prefix=test_set.img_dir, key='--ann-file')
    if cfg is None:
        raise ConfigError('without a config, give the data set: --ann-file and --img-dir')
    return get_test_dataset_cfg(cfg)


class DetectionTestData(TestData):
    """The config's COCO test set; COCO box / mask / proposal metrics."""

    stages = 'load, infer, encode, evaluate'

    def __init__(
        self,
        cfg: Any,
        spec: ModelSpec,
        pipeline: Pipeline,
        request: TestRequest,
        result_filter: ResultFilter | None,
        logger: Logger = print,
    ) -> None:
        if 'accuracy' in request.metrics:
            raise ConfigError(
                f'--eval accuracy is for classifiers; {request.model_file} is a '
                f'{spec.model_type}: use bbox, segm or proposal'
            )
        data_cfg = dataset_paths(cfg, request.test_set)
        self.dataset = CocoDetectionDataset(
            data_cfg['ann_file'], data_cfg['img_prefix'], pipeline, data_cfg['key']
        )
        check_coco_ids(self.dataset.coco.dataset, data_cfg['ann_file'])
        missing = missing_image_files(self.dataset.coco.dataset, data_cfg['img_prefix'])
        if missing:
            more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
            raise ImageError(f'image not found: {missing[0]}{more}')
        self.class_names = spec.class_names
        self.label_to_cat = resolve_class_map(
            self.class_names,
            spec.num_classes,
            self.dataset.class_names,
            self.dataset.cat_ids,
            request.class_map,
        )
        if request.class_map is not None:
            for line in describe_class_map(
                self.label_to_cat, self.class_names, self.dataset.class_names, self.dataset.cat_ids
            ):
                logger(f'note: {line}')
        if (
            request.metrics
        ):  # before any image is run: a meaningless AP is refused, a doubtful one named
            coco = self.dataset.coco.dataset
            for line in check_coco_annotations(coco, data_cfg['ann_file'], request.metrics):
                logger(f'warning: {line}')
        self.request = request
        self.result_filter = result_filter

    def batch_results(self, outputs: dict[str, np.ndarray], metas: list[dict]) -> list:
        # Masks are pasted and RLE-encoded batch by batch, so memory stays flat on any data set.
        results = outputs_to_results(outputs, metas, self.result_filter)
        if self.request.show_dir:
            _draw(results, metas, self.class_names, self.request)
        return results

    def record(
        self, results: list, img_ids: list[int], latency_ms: float, gathered: bool
    ) -> TestRun:
        return TestRun(results, img_ids, class_names=self.class_names, latency_ms=latency_ms)

    def finish(self, run: TestRun, logger: Logger) -> None:
        request = self.request
        if request.show_dir:
            logger(f'drawings of {len(run.results)} images written to {request.show_dir}/')
        if request.metrics:
            from ..evaluation.coco_metric import evaluate_coco

            if (line := left_out_line(run.results, self.label_to_cat)) is not None:
                logger(line)
            # The data set's own COCO: the annotation file is parsed once per run.
            run.metrics = evaluate_coco(
                self.dataset.coco,
                run.results,
                run.img_ids,
                self.dataset.cat_ids,
                metrics=tuple(request.metrics),
                label_to_cat=self.label_to_cat,
                backend=request.eval_backend,
                **request.eval_options,
            )

    def results_payload(self, run: TestRun) -> bytes:
        return pickle.dumps(
            [
                dict(img_id=i, boxes=r.boxes, scores=r.scores, labels=r.labels, masks=r.masks)
                for i, r in zip(run.img_ids, run.results)
            ]
        )

    def coco_json(self, run: TestRun) -> str:
        from ..evaluation.coco_metric import results_to_coco_json

        return json.dumps(results_to_coco_json(run.results, run.img_ids, self.label_to_cat))


def _draw(results: list, metas: list[dict], class_names, request: TestRequest) -> None:
    from ..visualization import draw_detections, save_image

    for result, meta in zip(results, metas):
        image = load_image(meta['filename'])
        name = Path(meta['filename']).stem + '.jpg'
        drawn = draw_detections(image, result, class_names, request.show_score_thr)
        save_image(Path(request.show_dir) / name, drawn)
