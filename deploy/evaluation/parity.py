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

    ``matched`` pairs have the same label and IoU >= the matching threshold; errors are over matched
    pairs only. ``matched_fraction`` divides by the larger of the two counts, so both missing and
    extra detections lower it.
    """

    num_ref: int = 0
    num_test: int = 0
    matched: int = 0
    max_score_err: float = 0.0
    max_box_err: float = 0.0

    @property
    def matched_fraction(self) -> float:
        denom = max(self.num_ref, self.num_test)
        return 1.0 if denom == 0 else self.matched / denom

    def merge(self, other: 'ParityStats') -> 'ParityStats':
        return ParityStats(
            self.num_ref + other.num_ref,
            self.num_test + other.num_test,
            self.matched + other.matched,
            max(self.max_score_err, other.max_score_err),
            max(self.max_box_err, other.max_box_err),
        )

    def passed(
        self, min_matched: float = 0.99, score_atol: float = 1e-3, box_atol: float = 1.0
    ) -> bool:
        """True when the reference had detections and the test reproduces them.

        A comparison against an empty reference proves nothing, so it never passes.
        """
        return (
            self.num_ref > 0
            and self.matched_fraction >= min_matched
            and self.max_score_err <= score_atol
            and self.max_box_err <= box_atol
        )


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
        stats.max_score_err = max(stats.max_score_err, float(abs(ref.scores[i] - test.scores[j])))
        stats.max_box_err = max(
            stats.max_box_err, float(np.abs(ref.boxes[i] - test.boxes[j]).max())
        )
    return stats


def match_result_lists(
    refs: list[DetectionResult], tests: list[DetectionResult], iou_thr: float = 0.5
) -> ParityStats:
    """:func:`match_detections` over paired images, merged."""
    total = ParityStats()
    for ref, test in zip(refs, tests, strict=True):
        total = total.merge(match_detections(ref, test, iou_thr))
    return total
