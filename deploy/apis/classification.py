"""The classifier side of ``tools/test.py`` (top-k accuracy of any backend on an image-folder or
annotation-file set) and of ``tools/pytorch2onnx.py --show``.

``deploy.apis.test.run_test`` hands a classifier model file here once its contract is checked;
detection code never sees a classifier.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Subset
from tqdm import tqdm

from ..config.classification import get_classification_dataset_cfg
from ..datasets.classification import (
    ClassificationDataset,
    load_classification_samples,
)
from ..datasets.coco import build_dataloader
from ..errors import ConfigError, DeployError
from ..evaluation.accuracy import accuracy
from ..structures import ClassificationResult
from .distributed import gather_results, shard_indices
from .run_record import TestRun, write_metrics, write_output

#: the metric ``--eval`` names for classifiers
CLASSIFICATION_METRICS = ('accuracy',)
DEFAULT_TOPK = (1, 5)


@dataclass
class ClassificationRun(TestRun):
    """Results of :func:`run_classification_test`: a ``TestRun`` whose ``results`` are
    :class:`ClassificationResult`, with each image's true label and file."""

    gt_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    filenames: list[str] = field(default_factory=list)

    @property
    def scores(self) -> np.ndarray:
        """``[N, C]`` scores of every image, in data-set order."""
        return np.stack([r.scores for r in self.results]) if self.results else np.zeros((0, 0))


def evaluation_topk(cfg, num_classes: int) -> tuple[int, ...]:
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


def run_classification_test(
    runner,
    plan,
    cfg,
    model_file,
    backend: str,
    *,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 1,
    num_workers: int = 2,
    num_images: int | None = None,
    metrics=(),
    format_only: str | None = None,
    out: str | None = None,
    work_dir: str | None = None,
    show_dir: str | None = None,
    progress: bool = True,
    logger=print,
) -> ClassificationRun:
    """Classify the config's test set with ``runner`` and compute top-k accuracy.

    Args: as :func:`deploy.apis.test.run_test` (``runner`` and ``plan`` already built there);
    ``metrics`` may only be ``accuracy``. ``out`` pickles one dict per image (``img_id``,
    ``filename``, ``gt_label``, ``scores``, ``pred_label``).
    """
    unknown = sorted(set(metrics) - set(CLASSIFICATION_METRICS))
    if unknown:
        raise ConfigError(
            f'{model_file} is a classifier: evaluate it with --eval accuracy, not '
            f'{", ".join(unknown)}'
        )
    if format_only:
        raise ConfigError('--format-only writes COCO detections: a classifier has none')
    data_cfg = get_classification_dataset_cfg(cfg)
    samples = load_classification_samples(
        data_cfg['img_prefix'], data_cfg['ann_file'], data_cfg['classes'], data_cfg['key']
    )
    spec = plan.spec
    mapping = _label_map(spec.class_names, samples.class_names)
    gt_all = samples.labels if mapping is None else mapping[samples.labels]
    if spec.num_classes and int(gt_all.max()) >= spec.num_classes:
        raise ConfigError(
            f'the data set has label {int(gt_all.max())}, but the model predicts '
            f'{spec.num_classes} classes'
        )
    dataset = ClassificationDataset(samples, plan.pipeline())
    indices = list(range(len(dataset)))[:num_images]
    if world_size > 1:
        indices = [indices[i] for i in shard_indices(len(indices), rank, world_size)]
    shard = dataset if len(indices) == len(dataset) else Subset(dataset, indices)
    loader = build_dataloader(shard, batch_size=batch_size, num_workers=num_workers)

    results: list[ClassificationResult] = []
    img_ids: list[int] = []
    infer_seconds = 0.0
    run_start = time.perf_counter()
    bar = tqdm(total=len(indices), desc=backend, unit='img', disable=not progress)
    with bar:
        for img, metas in loader:
            inputs = dict(
                input=img.numpy(),
                img_shape=np.asarray([m['img_shape'][:2] for m in metas], np.float32),
            )
            start = time.perf_counter()
            scores = runner(inputs)['scores']
            infer_seconds += time.perf_counter() - start
            results += [ClassificationResult(np.asarray(row, np.float32)) for row in scores]
            img_ids += [int(m['img_id']) for m in metas]
            bar.update(len(metas))
    latency_ms = 1000 * infer_seconds / max(len(results), 1)
    gathered = gather_results(results, img_ids)
    if gathered is None:  # not rank 0
        return ClassificationRun(results, img_ids, gt_labels=gt_all[img_ids], latency_ms=latency_ms)
    results, img_ids = gathered
    run = ClassificationRun(
        results,
        img_ids,
        class_names=spec.class_names or samples.class_names,
        latency_ms=latency_ms,
        gt_labels=gt_all[img_ids],
        filenames=[samples.paths[i] for i in img_ids],
    )
    if metrics:
        topk = evaluation_topk(cfg, run.scores.shape[1])
        run.metrics = accuracy(run.scores, run.gt_labels, topk)
        logger(format_accuracy(run.metrics, backend, len(results)))
    if show_dir:
        for result, name in zip(run.results, run.filenames):
            draw_label(name, result, run.class_names, Path(show_dir))
        logger(f'drawings of {len(results)} images written to {show_dir}/')
    failures: list[str] = []
    if work_dir and run.metrics:
        write_metrics(
            work_dir, cfg, model_file, backend, len(results), run.metrics, logger, failures
        )
    if out:
        payload = pickle.dumps(
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
        write_output(out, payload, 'results', logger, failures)
    run.wall_seconds = time.perf_counter() - run_start
    if run.results:
        logger(
            f'{len(run.results)} images: {len(run.results) / run.wall_seconds:.1f} img/s end to '
            f'end (load, infer, evaluate), {1000 / max(latency_ms, 1e-9):.1f} img/s backend '
            f'inference alone ({run.pipeline_efficiency:.0%})'
        )
    if failures:
        raise DeployError('; '.join(failures))
    return run


def format_accuracy(metrics: dict, backend: str, num_images: int) -> str:
    """``accuracy/top1: 95.33  accuracy/top5: 100.00  (onnxruntime, 300 images)``."""
    values = '  '.join(f'{k}: {v:.2f}' for k, v in metrics.items())
    return f'{values}  ({backend}, {num_images} images)'


def draw_classification(
    image: np.ndarray, result: ClassificationResult, class_names=None, k: int = 3
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


def draw_label(filename: str, result: ClassificationResult, class_names, out_dir: Path) -> Path:
    from ..datasets.pipeline import load_image
    from ..visualization import save_image

    path = out_dir / (Path(filename).stem + '.jpg')
    save_image(path, draw_classification(load_image(filename), result, class_names))
    return path


def save_classification_pictures(model, backend, case, image, output_file: Path, logger) -> None:
    """``--show`` for classifiers: the top classes of PyTorch and of ``backend`` on the image."""
    from ..backends.pytorch import PyTorchBackend
    from ..visualization import save_image

    for name, runner in (('pytorch', PyTorchBackend(model)), (backend.name, backend)):
        scores = runner(case.inputs())['scores'][0]
        path = output_file.with_name(f'{output_file.stem}_{name}.png')
        drawn = draw_classification(image, ClassificationResult(scores), model.class_names)
        save_image(path, drawn)
        logger(f'wrote {path}')
