"""The evaluation job behind ``tools/test.py``: a data set through a backend, then COCO metrics."""

import json
import os
import pickle
import time
from pathlib import Path

from torch.utils.data import Subset
from tqdm import tqdm

from ..backends import build_backend
from ..config import get_test_dataset_cfg, load_config
from ..datasets.coco import CocoDetectionDataset, build_dataloader
from ..datasets.pipeline import load_image, network_inputs
from ..errors import ConfigError, DeployError
from ..evaluation.class_map import resolve_class_map
from ..postprocess import outputs_to_results
from ..structures import DetectionResult
from .classification import run_classification_test
from .contract import plan_run
from .distributed import gather_results, init_distributed, shard_indices
from .run_record import TestRun, write_metrics, write_output


def run_test(
    config,
    model_file,
    backend: str = 'onnxruntime',
    *,
    cfg_options=None,
    device: str = 'cpu',
    batch_size: int = 1,
    num_workers: int = 2,
    num_threads: int | None = None,
    num_images: int | None = None,
    metrics=(),
    eval_options: dict | None = None,
    eval_backend: str = 'pycocotools',
    class_map: str | None = None,
    strict: bool = True,
    out: str | None = None,
    format_only: str | None = None,
    work_dir: str | None = None,
    show_dir: str | None = None,
    show_score_thr: float = 0.3,
    launcher: str = 'none',
    precision: str | None = None,
    progress: bool = True,
    logger=print,
) -> TestRun:
    """Run a model on the config's test set and evaluate it.

    Args:
        config: config path or loaded config.
        model_file: checkpoint (``pytorch``), ``.onnx`` (``onnxruntime``), engine (``tensorrt``).
        num_images: only the first this many images of the test set (by id).
        metrics: any of ``bbox``, ``segm`` (mask models: masks are pasted with the config's
            ``mask_thr_binary`` and stream as COCO RLE), ``proposal``; ``accuracy`` for
            classifiers (their run is :func:`deploy.apis.classification.run_classification_test`).
        class_map: how model labels become data-set categories
            (:func:`deploy.evaluation.class_map.resolve_class_map`; default: names must match).
        strict: checkpoint keys must match the model (``pytorch`` backend).
        out: pickle file for the raw results; ``format_only``: COCO json file to write;
            ``work_dir``: folder for ``eval_<time>.json`` with the metrics. Metrics are computed
            and logged before any file is written, and written even if ``out`` cannot be.
        show_dir: draw detections above ``show_score_thr`` into this folder.
        precision: inference precision of backends that choose it at load time (``openvino``:
            ``fp32``, ``bf16``, ``int8``); ``None``: the file's.
        launcher: ``'pytorch'`` under ``torchrun``: each rank runs its shard of the data set on
            its own backend session (GPU ``LOCAL_RANK`` for ``cuda``), rank 0 gathers the results
            and alone writes and evaluates; the other ranks return their shard, without metrics.
    """
    cfg = load_config(config, cfg_options) if isinstance(config, (str, Path)) else config
    rank, world_size = init_distributed(launcher, device=device)
    if world_size > 1 and device in ('cuda', 'gpu'):
        device = f'cuda:{os.environ.get("LOCAL_RANK", rank)}'
    if rank != 0:
        progress, logger = False, _silent
    # The model first: a bad model file is reported before any data is touched.
    extra = {} if precision is None else dict(precision=precision)
    runner = build_backend(
        backend,
        model_file,
        cfg=cfg,
        device=device,
        num_threads=num_threads,
        strict=strict,
        **extra,
    )
    plan = plan_run(runner, cfg, model_file, logger)
    if plan.max_batch is not None and batch_size > plan.max_batch:
        reason = 'takes decoded images' if plan.decoded_images else 'has a static input shape'
        logger(f'note: the model {reason}: batch size forced to 1')
        batch_size = 1
    if plan.spec.task == 'classification':
        return run_classification_test(
            runner,
            plan,
            cfg,
            model_file,
            backend,
            rank=rank,
            world_size=world_size,
            batch_size=batch_size,
            num_workers=num_workers,
            num_images=num_images,
            metrics=metrics,
            format_only=format_only,
            out=out,
            work_dir=work_dir,
            show_dir=show_dir,
            progress=progress,
            logger=logger,
        )
    if 'accuracy' in metrics:
        raise ConfigError(
            f'--eval accuracy is for classifiers; {model_file} is a {plan.spec.model_type}: '
            'use bbox, segm or proposal'
        )
    data_cfg = get_test_dataset_cfg(cfg)
    pipeline = plan.pipeline()
    dataset = CocoDetectionDataset(
        data_cfg['ann_file'], data_cfg['img_prefix'], pipeline, data_cfg['key']
    )
    class_names = plan.spec.class_names
    label_to_cat = resolve_class_map(
        class_names, plan.spec.num_classes, dataset.class_names, dataset.cat_ids, class_map
    )
    indices = list(range(len(dataset)))[:num_images]
    if world_size > 1:
        indices = [indices[i] for i in shard_indices(len(indices), rank, world_size)]
    shard = dataset if len(indices) == len(dataset) else Subset(dataset, indices)
    loader = build_dataloader(shard, batch_size=batch_size, num_workers=num_workers)

    results: list[DetectionResult] = []
    img_ids: list[int] = []
    infer_seconds = 0.0
    run_start = time.perf_counter()
    for img, metas in _progress(loader, backend, len(indices), progress):
        inputs = network_inputs(img, metas)
        start = time.perf_counter()
        outputs = runner(inputs)
        infer_seconds += time.perf_counter() - start
        # Masks are pasted and RLE-encoded batch by batch, so memory stays flat on any data set.
        batch_results = outputs_to_results(outputs, metas, plan.result_filter)
        results.extend(batch_results)
        img_ids.extend(int(m['img_id']) for m in metas)
        if show_dir:
            _draw(batch_results, metas, class_names, show_dir, show_score_thr)

    latency_ms = 1000 * infer_seconds / max(len(results), 1)
    gathered = gather_results(results, img_ids)
    if gathered is None:  # not rank 0: rank 0 writes and evaluates
        return TestRun(results, img_ids, class_names=class_names, latency_ms=latency_ms)
    results, img_ids = gathered
    run = TestRun(results, img_ids, class_names=class_names, latency_ms=latency_ms)
    if show_dir:
        logger(f'drawings of {len(results)} images written to {show_dir}/')
    if metrics:
        from ..evaluation.coco_metric import evaluate_coco

        # The data set's own COCO: the annotation file is parsed once per run.
        run.metrics = evaluate_coco(
            dataset.coco,
            results,
            img_ids,
            dataset.cat_ids,
            metrics=tuple(metrics),
            label_to_cat=label_to_cat,
            backend=eval_backend,
            **(eval_options or {}),
        )
    # Files last: a full disk or a bad path must not cost the evaluation just printed.
    failures = []
    if work_dir and run.metrics:
        write_metrics(
            work_dir, cfg, model_file, backend, len(results), run.metrics, logger, failures
        )
    if out:
        payload = pickle.dumps(
            [
                dict(img_id=i, boxes=r.boxes, scores=r.scores, labels=r.labels, masks=r.masks)
                for i, r in zip(img_ids, results)
            ]
        )
        write_output(out, payload, 'results', logger, failures)
    if format_only:
        from ..evaluation.coco_metric import results_to_coco_json

        dets = results_to_coco_json(results, img_ids, label_to_cat)
        write_output(format_only, json.dumps(dets), 'COCO json', logger, failures)
    run.wall_seconds = time.perf_counter() - run_start
    if run.results:
        logger(
            f'{len(run.results)} images: {len(run.results) / run.wall_seconds:.1f} img/s end to '
            f'end (load, infer, encode, evaluate), {1000 / max(latency_ms, 1e-9):.1f} img/s '
            f'backend inference alone ({run.pipeline_efficiency:.0%})'
        )
    if failures:
        raise DeployError('; '.join(failures))
    return run


def _progress(loader, backend: str, total: int, enabled: bool):
    """A progress bar in images (whole numbers, whatever the batch size)."""
    bar = tqdm(total=total, desc=backend, unit='img', disable=not enabled, dynamic_ncols=True)
    with bar:
        for img, metas in loader:
            yield img, metas
            bar.update(len(metas))


def _silent(*_args, **_kwargs) -> None:
    """The logger of ranks other than 0."""


def _draw(results, metas, class_names, show_dir, score_thr) -> None:
    from ..visualization import draw_detections, save_image

    for result, meta in zip(results, metas):
        image = load_image(meta['filename'])
        name = Path(meta['filename']).stem + '.jpg'
        save_image(Path(show_dir) / name, draw_detections(image, result, class_names, score_thr))
