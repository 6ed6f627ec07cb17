"""The verification table's error columns: a large score error of a matched pair shows."""

import numpy as np

from deploy.evaluation.parity import match_detections
from deploy.export.verify import TOLERANCES, VerifyRow, format_verify_table
from deploy.structures import DetectionResult


def _result(scores):
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    return DetectionResult(boxes, np.array(scores, np.float32), np.array([0, 1], np.int64))


def test_max_score_err_covers_every_matched_pair():
    """An INT8 score 0.2 off is a matched pair, not an exact one: it must still show."""
    stats = match_detections(_result([0.9, 0.5]), _result([0.9, 0.3]))
    assert stats.matched == 2 and stats.exact == 1
    assert np.isclose(stats.max_matched_score_err, 0.2)
    assert stats.max_score_err < 1e-6  # over exact pairs only, as the tolerances use it
    merged = stats.merge(match_detections(_result([0.9, 0.5]), _result([0.9, 0.5])))
    assert np.isclose(merged.max_matched_score_err, 0.2)
    row = VerifyRow('int8', (1, 3, 64, 64), None, None, stats, 0.9, TOLERANCES['int8'])
    table = format_verify_table([row], 'onnxruntime')
    assert '2.0e-01' in table and 'max score err over every matched pair' in table
