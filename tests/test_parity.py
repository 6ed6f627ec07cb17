"""Detection parity: IoU matching (not position), exact pairs, and pasted-mask agreement."""

import numpy as np
from pycocotools import mask as mask_utils

from deploy.evaluation.parity import match_detections
from deploy.structures import DetectionResult


def _result(boxes, scores, labels, masks=None):
    return DetectionResult(
        boxes=np.asarray(boxes, np.float32),
        scores=np.asarray(scores, np.float32),
        labels=np.asarray(labels, np.int64),
        masks=masks,
    )


def _rle(x1, y1, x2, y2, shape=(64, 64)):
    bitmap = np.zeros(shape, np.uint8)
    bitmap[y1:y2, x1:x2] = 1
    rle = mask_utils.encode(np.asfortranarray(bitmap))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def test_matching_ignores_order_and_needs_the_same_label():
    ref = _result([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 2])
    shuffled = _result([[20, 20, 40, 40], [0, 0, 10, 10]], [0.8, 0.9], [2, 1])
    stats = match_detections(ref, shuffled)
    assert stats.matched == stats.exact == 2 and stats.passed()
    relabelled = _result([[20, 20, 40, 40], [0, 0, 10, 10]], [0.8, 0.9], [2, 3])
    assert not match_detections(ref, relabelled).passed()


def test_empty_reference_never_passes():
    empty = _result(np.zeros((0, 4)), [], [])
    assert not match_detections(empty, empty).passed()


def test_masks_of_exact_pairs_are_compared():
    boxes, scores, labels = [[8, 8, 40, 40]], [0.9], [0]
    ref = _result(boxes, scores, labels, [_rle(8, 8, 40, 40)])
    same = _result(boxes, scores, labels, [_rle(8, 8, 40, 40)])
    stats = match_detections(ref, same)
    assert stats.min_mask_iou == 1.0 and stats.passed()
    # Same box and score, but half the mask missing: the boxes agree, the masks do not.
    half = _result(boxes, scores, labels, [_rle(8, 8, 24, 40)])
    stats = match_detections(ref, half)
    assert stats.exact == 1 and abs(stats.min_mask_iou - 0.5) < 1e-6
    assert not stats.passed()
    # Bitmaps work the same way.
    bitmap = np.zeros((1, 64, 64), bool)
    bitmap[0, 8:40, 8:40] = True
    assert match_detections(
        _result(boxes, scores, labels, bitmap), _result(boxes, scores, labels, bitmap.copy())
    ).passed()
