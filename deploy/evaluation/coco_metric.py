"""COCO box / mask / proposal metrics: pycocotools, or faster-coco-eval (same numbers, faster)."""
import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..structures import DetectionResult

#: MMDetection's names of COCOeval.stats[0:6]
_STAT_NAMES = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
EVAL_BACKENDS = ('pycocotools', 'faster-coco-eval')


def _encode_mask(mask) -> dict:
    from pycocotools import mask as mask_utils
    if isinstance(mask, dict):
        rle = dict(mask)
    else:
        rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    if isinstance(rle['counts'], bytes):
        rle['counts'] = rle['counts'].decode('ascii')
    return rle


def results_to_coco_json(results: list[DetectionResult], img_ids: list[int], cat_ids: list[int],
                         with_masks: bool = False) -> list[dict]:
    """Detections -> COCO result dicts (label ``i`` -> ``cat_ids[i]``, boxes as ``[x, y, w, h]``).

    Labels beyond the data set's categories (a model with more classes than the data) are dropped,
    with one warning.
    """
    out, dropped = [], 0
    for img_id, result in zip(img_ids, results, strict=True):
        for k in range(len(result)):
            label = int(result.labels[k])
            if label >= len(cat_ids):
                dropped += 1
                continue
            x1, y1, x2, y2 = (float(v) for v in result.boxes[k])
            entry = dict(image_id=int(img_id), category_id=int(cat_ids[label]),
                         bbox=[x1, y1, x2 - x1, y2 - y1], score=float(result.scores[k]))
            if with_masks and result.masks is not None:
                entry['segmentation'] = _encode_mask(result.masks[k])
            out.append(entry)
    if dropped:
        warnings.warn(f'{dropped} detections have labels >= the {len(cat_ids)} categories of the '
                      'data set and were ignored', stacklevel=2)
    return out


def _load_gt(ann_file_or_coco, backend: str):
    if backend == 'faster-coco-eval':
        from faster_coco_eval import COCO
    else:
        from pycocotools.coco import COCO
    if not isinstance(ann_file_or_coco, (str, Path)):
        ann_file_or_coco = ann_file_or_coco.dataset
        coco = COCO()
        coco.dataset = ann_file_or_coco
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file_or_coco))


def _cocoeval(gt, dt, iou_type: str, backend: str):
    if backend == 'faster-coco-eval':
        from faster_coco_eval import COCOeval_faster
        return COCOeval_faster(gt, dt, iou_type, print_function=print)
    from pycocotools.cocoeval import COCOeval
    return COCOeval(gt, dt, iou_type)


def evaluate_coco(ann_file_or_coco, results: list[DetectionResult], img_ids: list[int],
                  cat_ids: list[int], metrics=('bbox',), classwise: bool = False,
                  proposal_nums=(100, 300, 1000), backend: str = 'pycocotools',
                  logger=print) -> dict:
    """COCO metrics of ``results`` (one per image id), printing the standard tables.

    Returns:
        MMDetection-style keys: ``bbox_mAP``, ``bbox_mAP_50``, ... ``segm_mAP...``, and for
        ``proposal`` the class-agnostic ``AR@100``, ``AR@300``, ``AR@1000``; APs in ``[0, 1]``.
    """
    if backend not in EVAL_BACKENDS:
        raise ValueError(f'unknown evaluation backend {backend!r}')
    gt = _load_gt(ann_file_or_coco, backend)
    out = {}
    for metric in metrics:
        iou_type = 'segm' if metric == 'segm' else 'bbox'
        dets = results_to_coco_json(results, img_ids, cat_ids, with_masks=metric == 'segm')
        logger(f'\nEvaluating {metric} ({backend}) ...')
        if not dets:
            logger(f'no detections: {metric} metrics are 0')
            keys = (('AR@' + str(n)) for n in proposal_nums) if metric == 'proposal' else (
                f'{metric}_{s}' for s in _STAT_NAMES)
            out.update(dict.fromkeys(keys, 0.0))
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(dets)
        evaluator = _cocoeval(gt, dt, iou_type, backend)
        evaluator.params.imgIds = list(img_ids)
        if metric == 'proposal':
            evaluator.params.useCats = 0
            evaluator.params.maxDets = list(proposal_nums)
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        logger(buffer.getvalue().rstrip())
        stats = evaluator.stats
        if metric == 'proposal':
            for i, n in enumerate(proposal_nums):
                out[f'AR@{n}'] = float(stats[6 + i])
        else:
            out.update({f'{metric}_{name}': float(stats[i]) for i, name in enumerate(_STAT_NAMES)})
            if classwise:
                out.update(_classwise(evaluator, gt, cat_ids, metric, logger))
    return out


def _classwise(evaluator, gt, cat_ids, metric, logger) -> dict:
    """Per-class AP (IoU 0.50:0.95, all areas, maxDets 100) from the accumulated precision."""
    precision = evaluator.eval['precision']  # [T, R, K, A, M]
    out, lines = {}, []
    for k, cat_id in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        ap = float(np.mean(p[p > -1])) if (p > -1).any() else float('nan')
        name = gt.cats[cat_id]['name']
        out[f'{metric}_{name}_AP'] = ap
        lines.append(f'  {name:<20} {ap:.3f}')
    logger('per-class AP:\n' + '\n'.join(lines))
    return out


def format_only(results: list[DetectionResult], img_ids: list[int], cat_ids: list[int],
                out_json: str | Path, with_masks: bool = False) -> Path:
    """Write COCO-format results atomically (temporary name, then rename)."""
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_name(out_json.name + '.tmp')
    tmp.write_text(json.dumps(results_to_coco_json(results, img_ids, cat_ids, with_masks)))
    os.replace(tmp, out_json)
    return out_json
