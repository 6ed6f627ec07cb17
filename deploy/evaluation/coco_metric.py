"""COCO box / mask / proposal metrics with MMDetection's names and conventions.

Two interchangeable evaluators give the same numbers: ``pycocotools`` (the reference) and
``faster-coco-eval`` (a C++ port, much faster on large sets; imported only when asked for).
"""

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DeployError
from ..fileio import write_atomic
from ..structures import DetectionResult

METRICS = ('bbox', 'segm', 'proposal')
EVAL_BACKENDS = ('pycocotools', 'faster-coco-eval')
#: MMDetection's names of ``COCOeval.stats[0:6]``
_STAT_NAMES = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


def _encode_mask(mask) -> dict:
    """A ``[H, W]`` bool mask, or a COCO RLE dict, as an RLE dict with ``counts`` a str."""
    from pycocotools import mask as mask_utils

    if isinstance(mask, dict):
        rle = dict(mask)
    else:
        rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    if isinstance(rle['counts'], bytes):
        rle['counts'] = rle['counts'].decode('ascii')
    return rle


def results_to_coco_json(
    results: Sequence[DetectionResult],
    img_ids: Sequence[int],
    cat_ids: Sequence[int],
    with_boxes: bool = True,
    with_masks: bool | None = None,
) -> list[dict]:
    """Detections -> COCO result dicts ``image_id, category_id, bbox, score[, segmentation]``.

    Label ``i`` becomes ``cat_ids[i]`` (see :mod:`deploy.evaluation.class_map`); labels
    ``>= len(cat_ids)`` or mapped to a negative id are not scored (dropped; counted in one
    warning when no mapping said so). Boxes go from ``x1, y1, x2, y2`` to
    ``[x, y, w, h]``. Masks (bool arrays or RLE dicts) become RLE with a str ``counts``.

    Args:
        with_boxes: include ``bbox`` (MMDetection leaves it out of mask results, so that COCO
            takes the instance area from the mask).
        with_masks: include ``segmentation``: True requires masks, None includes them when the
            results have them.
    """
    if len(results) != len(img_ids):
        raise ValueError(f'{len(results)} results for {len(img_ids)} image ids')
    out, dropped = [], 0
    for img_id, result in zip(img_ids, results):
        if not len(result):
            continue
        masks = result.masks if with_masks is not False else None
        if with_masks and masks is None:
            raise ConfigError(
                f'mask results requested but the detections of image {img_id} have no masks '
                '(evaluate segm only for instance segmentation models)'
            )
        labels = np.asarray(result.labels).astype(np.int64)
        boxes = np.asarray(result.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(result.scores, dtype=np.float64)
        for k in range(len(result)):
            label = int(labels[k])
            if label >= len(cat_ids) or label < 0 or cat_ids[label] < 0:
                dropped += 1
                continue
            entry = dict(image_id=int(img_id), category_id=int(cat_ids[label]))
            if with_boxes:
                x1, y1, x2, y2 = boxes[k].tolist()
                entry['bbox'] = [x1, y1, x2 - x1, y2 - y1]
            entry['score'] = float(scores[k])
            if masks is not None:
                entry['segmentation'] = _encode_mask(masks[k])
            out.append(entry)
    if dropped and all(c >= 0 for c in cat_ids):
        warnings.warn(
            f'{dropped} detections have labels outside the {len(cat_ids)} categories of the '
            'data set and were ignored',
            stacklevel=2,
        )
    return out


def _as_log(logger) -> Callable[[str], None]:
    if logger is None:
        return lambda msg: None
    if isinstance(logger, logging.Logger):
        return logger.info
    return logger


def _coco_class(backend: str):
    if backend == 'faster-coco-eval':
        try:
            from faster_coco_eval import COCO
        except ImportError as err:
            raise DeployError(
                'evaluation backend faster-coco-eval is not installed '
                '(pip install faster-coco-eval, or use pycocotools)'
            ) from err
        return COCO
    from pycocotools.coco import COCO

    return COCO


def _load_gt(ann_file_or_coco, backend: str):
    """The ground truth as the backend's own ``COCO`` (from a path or any ``COCO``-like)."""
    coco_class = _coco_class(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(ann_file_or_coco, (str, os.PathLike)):
            path = Path(ann_file_or_coco)
            if not path.is_file():
                raise ConfigError(f'annotation file not found: {path}')
            return coco_class(str(path))
        if isinstance(ann_file_or_coco, coco_class):
            return ann_file_or_coco
        coco = coco_class()
        coco.dataset = ann_file_or_coco.dataset
        coco.createIndex()
        return coco


def _cocoeval(gt, dt, iou_type: str, backend: str):
    if backend == 'faster-coco-eval':
        from faster_coco_eval import COCOeval_faster

        return COCOeval_faster(gt, dt, iou_type, print_function=print)
    from pycocotools.cocoeval import COCOeval

    return COCOeval(gt, dt, iou_type)


_SUMMARY_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')


def summary_line(
    metric: str, metrics: dict, proposal_nums: Sequence[int] = (100, 300, 1000)
) -> str:
    """The table of one metric in one line: ``bbox: AP 0.663  AP50 0.899  AP75 0.805 ...``
    (``-`` where COCO had no ground truth to score)."""
    keys = _metric_keys(metric, proposal_nums)
    names = [k.replace('_', ' ') for k in keys] if metric == 'proposal' else _SUMMARY_NAMES
    values = ['-' if metrics[k] < 0 else f'{metrics[k]:.3f}' for k in keys]
    return f'{metric}: ' + '  '.join(f'{n} {v}' for n, v in zip(names, values))


def _metric_keys(metric: str, proposal_nums: Sequence[int]) -> list[str]:
    if metric == 'proposal':
        last = proposal_nums[-1]
        return [f'AR@{n}' for n in proposal_nums] + [f'AR_{s}@{last}' for s in 'sml']
    return [f'{metric}_{name}' for name in _STAT_NAMES]


def evaluate_coco(
    ann_file_or_coco,
    results: Sequence[DetectionResult],
    img_ids: Sequence[int],
    cat_ids: Sequence[int],
    metrics: str | Sequence[str] = ('bbox',),
    label_to_cat: Sequence[int] | None = None,
    classwise: bool = False,
    proposal_nums: Sequence[int] = (100, 300, 1000),
    backend: str = 'pycocotools',
    logger: Callable[[str], None] | logging.Logger | None = print,
) -> dict:
    """COCO metrics of ``results`` (one per entry of ``img_ids``), logging the standard tables.

    Args:
        ann_file_or_coco: the ground-truth annotation file, or a loaded ``COCO``.
        cat_ids: the data set's category ids (sorted), the categories that are scored.
        label_to_cat: the category id of each model label (negative: not scored), from
            :func:`deploy.evaluation.class_map.resolve_class_map`; default ``cat_ids`` (label
            ``i`` is the ``i``-th category).
        metrics: any of ``bbox``, ``segm`` (needs masks), ``proposal`` (class-agnostic recall of
            the detections at ``proposal_nums`` detections per image).
        classwise: also report per-class AP (``{metric}_{class name}_AP``).
        backend: ``pycocotools`` or ``faster-coco-eval`` (same numbers).
        logger: a callable taking one line, a ``logging.Logger``, or None for silence.

    Returns:
        MMDetection's keys, values in ``[0, 1]`` (-1 where COCO has no ground truth to score):
        ``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75``, ``bbox_mAP_s``, ``bbox_mAP_m``,
        ``bbox_mAP_l``, the same with ``segm_``, and for ``proposal`` ``AR@100``, ``AR@300``,
        ``AR@1000``, ``AR_s@1000``, ``AR_m@1000``, ``AR_l@1000``.
    """
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for metric in metrics:
        if metric not in METRICS:
            raise ConfigError(f'unknown metric {metric!r}; expected one of {", ".join(METRICS)}')
    if backend not in EVAL_BACKENDS:
        raise ConfigError(
            f'unknown evaluation backend {backend!r}; expected one of {", ".join(EVAL_BACKENDS)}'
        )
    proposal_nums = tuple(int(n) for n in proposal_nums)
    if 'proposal' in metrics and len(proposal_nums) != 3:
        raise ConfigError(f'proposal_nums needs three detection counts, got {proposal_nums}')
    log = _as_log(logger)
    gt = _load_gt(ann_file_or_coco, backend)
    out = {}
    for metric in metrics:
        iou_type = 'segm' if metric == 'segm' else 'bbox'
        dets = results_to_coco_json(
            results,
            img_ids,
            cat_ids if label_to_cat is None else label_to_cat,
            with_boxes=metric != 'segm',
            with_masks=metric == 'segm',
        )
        log(f'Evaluating {metric} ({backend})...')
        if not dets:
            log(f'no detections to score: every {metric} metric is 0')
            out.update(dict.fromkeys(_metric_keys(metric, proposal_nums), 0.0))
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(dets)
        evaluator = _cocoeval(gt, dt, iou_type, backend)
        evaluator.params.imgIds = [int(i) for i in img_ids]
        if metric == 'proposal':
            evaluator.params.useCats = 0
            evaluator.params.maxDets = list(proposal_nums)
        else:
            evaluator.params.catIds = [int(c) for c in cat_ids]
        table = io.StringIO()
        with contextlib.redirect_stdout(table):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        log(table.getvalue().rstrip())
        stats = [float(s) for s in evaluator.stats[:12]]
        keys = _metric_keys(metric, proposal_nums)
        if metric == 'proposal':
            out.update(zip(keys, stats[6:12]))
        else:
            out.update(zip(keys, stats[:6]))
        log(summary_line(metric, out, proposal_nums))
        if metric != 'proposal' and classwise:
            out.update(_classwise(evaluator, gt, metric, log))
    return out


def _classwise(evaluator, gt, metric: str, log) -> dict:
    """Per-class AP (IoU 0.50:0.95, all areas, the largest maxDets), as MMDetection computes it."""
    precision = evaluator.eval['precision']  # [T, R, K, A, M], K over the sorted params.catIds
    out, lines = {}, []
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        ap = float(np.mean(p)) if p.size else float('nan')
        name = gt.cats[cat_id]['name']
        out[f'{metric}_{name}_AP'] = ap
        lines.append(f'{name:<20} {ap:.3f}')
    log(f'{"category":<20} {metric} AP\n' + '\n'.join(lines))
    return out


def format_only(
    results: Sequence[DetectionResult],
    img_ids: Sequence[int],
    cat_ids: Sequence[int],
    out_json: str | Path,
    with_masks: bool | None = None,
) -> Path:
    """Write COCO-format results (boxes, and masks when present) to ``out_json``, atomically.

    The file is written under a temporary name and renamed, so a crash never leaves a truncated
    json behind. Returns the path.
    """
    dets = results_to_coco_json(results, img_ids, cat_ids, with_masks=with_masks)
    return write_atomic(out_json, json.dumps(dets))
