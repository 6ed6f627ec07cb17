"""The evaluation job behind ``tools/test.py``: a data set through a backend, then COCO metrics."""

import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Subset
from tqdm import tqdm

from ..backends import build_backend
from ..config import get_preprocess_cfg, get_test_cfg, get_test_dataset_cfg, load_config
from ..datasets.coco import CocoDetectionDataset, build_dataloader
from ..datasets.pipeline import TestPipeline, load_image
from ..export.metadata import read_metadata
from ..fileio import write_atomic
from ..postprocess import outputs_to_results
from ..structures import DetectionResult
from .distributed import gather_results, init_distributed, shard_indices


@dataclass
class TestRun:
    """Results of :func:`run_test`."""

    results: list[DetectionResult]
    img_ids: list[int]
    metrics: dict = field(default_factory=dict)
    class_names: tuple | None = None
    #: mean wall time of the backend call per image (pre/post-processing excluded), milliseconds
    latency_ms: float = 0.0
    #: wall time of the whole run: loading, inference, encoding, writing and evaluation
    wall_seconds: float = 0.0

    @property
    def pipeline_efficiency(self) -> float:
        """End-to-end throughput as a fraction of the backend's pure inference throughput."""
        if not self.wall_seconds or not self.latency_ms:
            return 0.0
        return (len(self.results) / self.wall_seconds) / (1000.0 / self.latency_ms)


def input_shape_rule(model_file: str | Path, backend: str) -> tuple[int, int] | None:
    """The static ``(h, w)`` an exported model was built for, or None when it is dynamic."""
    rules = _export_metadata(model_file, backend).get('input_rules') or {}
    if not rules.get('dynamic', True) and rules.get('input_shape'):
        return tuple(rules['input_shape'])
    return None


def _export_metadata(model_file: str | Path, backend: str) -> dict:
    """The export metadata of an ONNX file, or the copy a TensorRT engine's sidecar keeps."""
    if str(model_file).endswith('.onnx'):
        return read_metadata(model_file)
    if backend == 'tensorrt':
        from ..backends.tensorrt.engine import read_sidecar

        return (read_sidecar(model_file) or {}).get('onnx_metadata') or {}
    return {}


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
    metrics=(),
    eval_options: dict | None = None,
    eval_backend: str = 'pycocotools',
    out: str | None = None,
    format_only: str | None = None,
    show_dir: str | None = None,
    show_score_thr: float = 0.3,
    launcher: str = 'none',
    progress: bool = True,
    logger=print,
) -> TestRun:
    """Run a model on the config's test set and evaluate it.

    Args:
        config: config path or loaded config.
        model_file: checkpoint (``pytorch``), ``.onnx`` (``onnxruntime``), engine (``tensorrt``).
        metrics: any of ``bbox``, ``segm`` (mask models: masks are pasted with the config's
            ``mask_thr_binary`` and stream as COCO RLE), ``proposal``.
        out: pickle file for the raw results; ``format_only``: COCO json file to write.
        show_dir: draw detections above ``show_score_thr`` into this folder.
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
    runner = build_backend(backend, model_file, cfg=cfg, device=device, num_threads=num_threads)
    fixed_shape = input_shape_rule(model_file, backend)
    if fixed_shape is not None and batch_size != 1:
        logger('note: the model has a static input shape: batch size forced to 1')
        batch_size = 1
    data_cfg = get_test_dataset_cfg(cfg)
    pipeline = TestPipeline(get_preprocess_cfg(cfg), fixed_shape=fixed_shape)
    dataset = CocoDetectionDataset(data_cfg['ann_file'], data_cfg['img_prefix'], pipeline)
    class_names = _class_names(runner, model_file, backend)
    shard = dataset
    if world_size > 1:
        shard = Subset(dataset, shard_indices(len(dataset), rank, world_size))
    loader = build_dataloader(shard, batch_size=batch_size, num_workers=num_workers)
    mask_thr = mask_threshold(cfg)

    results: list[DetectionResult] = []
    img_ids: list[int] = []
    infer_seconds = 0.0
    run_start = time.perf_counter()
    for img, metas in tqdm(
        loader,
        desc=f'{backend}',
        unit='img',
        unit_scale=batch_size,
        disable=not progress,
        dynamic_ncols=True,
    ):
        inputs = dict(
            input=img.numpy(), img_shape=np.asarray([m['img_shape'][:2] for m in metas], np.float32)
        )
        start = time.perf_counter()
        outputs = runner(inputs)
        infer_seconds += time.perf_counter() - start
        # Masks are pasted and RLE-encoded batch by batch, so memory stays flat on any data set.
        batch_results = outputs_to_results(outputs, metas, mask_thr_binary=mask_thr)
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
    if out:
        _save_pickle(
            out,
            [
                dict(img_id=i, boxes=r.boxes, scores=r.scores, labels=r.labels, masks=r.masks)
                for i, r in zip(img_ids, results)
            ],
        )
        logger(f'results written to {out}')
    if format_only:
        from ..evaluation.coco_metric import format_only as write_coco_json

        write_coco_json(results, img_ids, dataset.cat_ids, format_only)
        logger(f'COCO json written to {format_only}')
    if metrics:
        from ..evaluation.coco_metric import evaluate_coco

        # The data set's own COCO: the annotation file is parsed once per run.
        run.metrics = evaluate_coco(
            dataset.coco,
            results,
            img_ids,
            dataset.cat_ids,
            metrics=tuple(metrics),
            backend=eval_backend,
            **(eval_options or {}),
        )
    run.wall_seconds = time.perf_counter() - run_start
    if run.results:
        logger(
            f'{len(run.results)} images: {len(run.results) / run.wall_seconds:.1f} img/s end to '
            f'end (load, infer, encode, evaluate), {1000 / max(latency_ms, 1e-9):.1f} img/s '
            f'backend inference alone ({run.pipeline_efficiency:.0%})'
        )
    return run


def mask_threshold(cfg) -> float:
    """``mask_thr_binary`` of the model's test config (two-stage ``rcnn`` part; default 0.5)."""
    test_cfg = get_test_cfg(cfg)
    rcnn = test_cfg.get('rcnn') or test_cfg
    return float(rcnn.get('mask_thr_binary', 0.5))


def _class_names(runner, model_file, backend: str):
    model = getattr(runner, 'model', None)
    names = getattr(model, 'class_names', None) or getattr(runner, 'class_names', None)
    if names:
        return tuple(names)
    return tuple(_export_metadata(model_file, backend).get('class_names') or ()) or None


def _silent(*_args, **_kwargs) -> None:
    """The logger of ranks other than 0."""


def _draw(results, metas, class_names, show_dir, score_thr) -> None:
    from ..visualization import draw_detections, save_image

    for result, meta in zip(results, metas):
        image = load_image(meta['filename'])
        name = Path(meta['filename']).stem + '.jpg'
        save_image(Path(show_dir) / name, draw_detections(image, result, class_names, score_thr))


def _save_pickle(path: str, obj) -> None:
    write_atomic(path, pickle.dumps(obj))
