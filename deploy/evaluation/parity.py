"""Compare two sets of detections by IoU matching (never by position in the output)."""

from dataclasses import dataclass

import numpy as np

from ..structures import DetectionResult


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class ParityStats:
    """Outcome of matching a test result set against a reference.

    ``matched`` pairs have the same label and IoU >= the matching threshold (0.5). Of those,
    ``exact`` pairs are the same detection up to numeric drift (IoU >= :data:`EXACT_IOU` and score
    difference <= :data:`EXACT_SCORE`); the rest are decision flips between near-tied candidates
    (NMS or top-k order decided by a 1e-6 difference), which random-weight models with flat score
    distributions produce now and then. Errors are measured over exact pairs, except
    ``max_matched_score_err``, over every matched pair (so a large score error shows; INT8 files
    have them). Fractions divide by
    the larger of the two counts, so both missing and extra detections lower them.
    """

    num_ref: int = 0
    num_test: int = 0
    matched: int = 0
    exact: int = 0
    max_score_err: float = 0.0
    max_box_err: float = 0.0
    #: smallest IoU between the pasted masks of an exact pair; None when there are no masks
    min_mask_iou: float | None = None
    #: largest score difference over every matched pair, exact or not
    max_matched_score_err: float = 0.0

    def _fraction(self, count: int) -> float:
        denom = max(self.num_ref, self.num_test)
        return 1.0 if denom == 0 else count / denom

    @property
    def matched_fraction(self) -> float:
        return self._fraction(self.matched)

    @property
    def exact_fraction(self) -> float:
        return self._fraction(self.exact)

    def merge(self, other: 'ParityStats') -> 'ParityStats':
        return ParityStats(
            self.num_ref + other.num_ref,
            self.num_test + other.num_test,
            self.matched + other.matched,
            self.exact + other.exact,
            max(self.max_score_err, other.max_score_err),
            max(self.max_box_err, other.max_box_err),
            _min_or_none(self.min_mask_iou, other.min_mask_iou),
            max(self.max_matched_score_err, other.max_matched_score_err),
        )

    def passed(
        self,
        min_matched: float = 0.99,
        min_exact: float = 0.95,
        box_atol: float = 1.0,
        min_mask_iou: float = 0.9,
    ) -> bool:
        """True when the reference had detections and the test reproduces them.

        A comparison against an empty reference proves nothing, so it never passes.
        """
        return (
            self.num_ref > 0
            and self.matched_fraction >= min_matched
            and self.exact_fraction >= min_exact
            and self.max_box_err <= box_atol
            and (self.min_mask_iou is None or self.min_mask_iou >= min_mask_iou)
        )


#: a matched pair is the same detection when its IoU and score agree this closely
EXACT_IOU = 0.95
EXACT_SCORE = 1e-3


def match_detections(
    ref: DetectionResult, test: DetectionResult, iou_thr: float = 0.5
) -> ParityStats:
    """Greedy matching in decreasing reference score: each reference detection takes the unmatched
    test detection of the same label with the highest IoU (at least ``iou_thr``)."""
    stats = ParityStats(num_ref=len(ref), num_test=len(test))
    if len(ref) == 0 or len(test) == 0:
        return stats
    iou = _iou_matrix(ref.boxes.astype(np.float64), test.boxes.astype(np.float64))
    iou[ref.labels[:, None] != test.labels[None, :]] = -1.0
    used = np.zeros(len(test), bool)
    for i in np.argsort(-ref.scores, kind='stable'):
        candidates = np.where(used, -1.0, iou[i])
        j = int(np.argmax(candidates))
        if candidates[j] < iou_thr:
            continue
        used[j] = True
        stats.matched += 1
        score_err = float(abs(ref.scores[i] - test.scores[j]))
        stats.max_matched_score_err = max(stats.max_matched_score_err, score_err)
        if candidates[j] >= EXACT_IOU and score_err <= EXACT_SCORE:
            stats.exact += 1
            stats.max_score_err = max(stats.max_score_err, score_err)
            stats.max_box_err = max(
                stats.max_box_err, float(np.abs(ref.boxes[i] - test.boxes[j]).max())
            )
            if ref.masks is not None and test.masks is not None:
                mask_iou = _mask_iou(ref.masks[i], test.masks[j])
                stats.min_mask_iou = _min_or_none(stats.min_mask_iou, mask_iou)
    return stats


def _mask_iou(a, b) -> float:
    """IoU of two pasted masks: COCO RLE dicts or boolean bitmaps (two empty masks agree)."""
    if isinstance(a, dict):
        from pycocotools import mask as mask_utils

        if not mask_utils.area(a) and not mask_utils.area(b):
            return 1.0
        return float(mask_utils.iou([a], [b], [0])[0, 0])
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _min_or_none(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None


def match_result_lists(
    refs: list[DetectionResult], tests: list[DetectionResult], iou_thr: float = 0.5
) -> ParityStats:
    """:func:`match_detections` over paired images, merged."""
    total = ParityStats()
    for ref, test in zip(refs, tests, strict=True):
        total = total.merge(match_detections(ref, test, iou_thr))
    return total


def parity_ap(refs: list[DetectionResult], tests: list[DetectionResult]) -> float | None:
    """COCO box AP@[.5:.95] of ``tests`` scored against ``refs`` taken as ground truth: 1.0 for
    the same detections, lower for every box, score order or label a backend gets wrong (the AP
    a user would lose). ``None`` when the reference has no detections."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, objects, dets = [], [], []
    labels = sorted({int(c) for r in (*refs, *tests) for c in r.labels})
    for img_id, (ref, test) in enumerate(zip(refs, tests, strict=True), start=1):
        images.append(dict(id=img_id))
        for box, label in zip(ref.boxes.astype(float), ref.labels):
            w, h = box[2] - box[0], box[3] - box[1]
            objects.append(
                dict(
                    id=len(objects) + 1,
                    image_id=img_id,
                    category_id=int(label),
                    bbox=[box[0], box[1], w, h],
                    area=max(w * h, 0.0),
                    iscrowd=0,
                )
            )
        for box, label, score in zip(test.boxes.astype(float), test.labels, test.scores):
            dets.append(
                dict(
                    image_id=img_id,
                    category_id=int(label),
                    bbox=[box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    score=float(score),
                )
            )
    if not objects:
        return None
    if not dets:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dict(
            images=images, annotations=objects, categories=[dict(id=c) for c in labels]
        )
        gt.createIndex()
        dt = gt.loadRes(dets)
        evaluator = COCOeval(gt, dt, 'bbox')
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return max(float(evaluator.stats[0]), 0.0)
