"""NMS ops against a brute-force reference, and the ONNX translations against the eager op."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from deploy.ops.multiclass_nms import (
    multiclass_nms,
    onnx_translation_table,
    register_legacy_symbolic,
)
from deploy.ops.nms import batched_nms, box_iou, nms


def brute_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def brute_nms(boxes, scores, thr, cap=None):
    """Textbook greedy NMS with plain Python: order by (-score, index)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(brute_iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
            if cap is not None and len(keep) == cap:
                break
    return keep


def brute_multiclass(boxes, scores, cap, iou_thr, score_thr, top_k):
    """Per image: per-class NMS of pairs above score_thr, then best top_k by (-score, flat idx)."""
    out = []
    for b in range(scores.shape[0]):
        n, c = scores.shape[1:]
        found = []
        for cls in range(c):
            idx = [i for i in range(n) if scores[b, i, cls] > score_thr]
            kept = brute_nms(
                [boxes[b, i] for i in idx], [scores[b, i, cls] for i in idx], iou_thr, cap
            )
            found += [(-scores[b, idx[k], cls], cls * n + idx[k], cls, idx[k]) for k in kept]
        out.append(sorted(found)[:top_k])
    return out


def random_boxes(gen, batch, n, c, size=100.0):
    xy = gen.random((batch, n, 2)) * size
    wh = gen.random((batch, n, 2)) * size / 3 + 1
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    scores = (gen.random((batch, n, c)) ** 2).astype(np.float32)
    return boxes, scores


def test_box_iou_matches_brute_force():
    gen = np.random.default_rng(0)
    boxes, _ = random_boxes(gen, 1, 20, 1)
    iou = box_iou(torch.from_numpy(boxes[0]), torch.from_numpy(boxes[0])).numpy()
    expected = [[brute_iou(a, b) for b in boxes[0]] for a in boxes[0]]
    np.testing.assert_allclose(iou, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('seed', range(5))
def test_nms_matches_brute_force(seed):
    gen = np.random.default_rng(seed)
    boxes, scores = random_boxes(gen, 1, 60, 1)
    keep = nms(torch.from_numpy(boxes[0]), torch.from_numpy(scores[0, :, 0]), 0.4)
    expected = brute_nms(boxes[0], scores[0, :, 0], 0.4)
    assert len(expected) > 1
    assert keep.tolist() == expected


def test_nms_ties_keep_lower_index_and_threshold_is_strict():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30.0]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    # Boxes 0 and 1 are identical with equal scores: the lower index survives.
    # Box 2 has IoU exactly 0.5 with box 0: suppressed only when the threshold is below 0.5.
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.49).tolist() == [0, 3]


def test_nms_empty_and_single():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    assert nms(torch.tensor([[0, 0, 1, 1.0]]), torch.tensor([0.3]), 0.5).tolist() == [0]


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5)
    assert keep.tolist() == [0, 1]


def _check_against_brute(boxes, scores, cap, iou_thr, score_thr, top_k):
    dets, labels = multiclass_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), cap, iou_thr, score_thr, top_k
    )
    expected = brute_multiclass(boxes, scores, cap, iou_thr, score_thr, top_k)
    assert dets.shape == (boxes.shape[0], top_k, 5) and labels.shape == (boxes.shape[0], top_k)
    for b, rows in enumerate(expected):
        n = len(rows)
        assert labels[b, :n].tolist() == [r[2] for r in rows]
        np.testing.assert_allclose(dets[b, :n, 4].numpy(), [-r[0] for r in rows])
        np.testing.assert_allclose(dets[b, :n, :4].numpy(), boxes[b, [r[3] for r in rows]])
        assert (labels[b, n:] == -1).all() and (dets[b, n:] == 0).all()
    return expected


@pytest.mark.parametrize(
    'batch,n,c,cap,top_k', [(1, 40, 3, 100, 20), (3, 30, 4, 5, 50), (2, 25, 1, 100, 100)]
)
def test_multiclass_nms_matches_brute_force(batch, n, c, cap, top_k):
    gen = np.random.default_rng(batch * 100 + n)
    boxes, scores = random_boxes(gen, batch, n, c)
    expected = _check_against_brute(boxes, scores, cap, 0.5, 0.1, top_k)
    assert all(len(rows) > 0 for rows in expected)


def test_multiclass_nms_ties_and_empty():
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]], np.float32)
    scores = np.full((1, 3, 2), 0.6, np.float32)
    expected = _check_against_brute(boxes, scores, 100, 0.5, 0.05, 10)
    assert [r[2] for r in expected[0]] == [0, 0, 1, 1]
    # Nothing above the threshold: every row is padding.
    dets, labels = multiclass_nms(torch.from_numpy(boxes), torch.zeros(1, 3, 2), 100, 0.5, 0.05, 10)
    assert (labels == -1).all() and (dets == 0).all()
    # No boxes at all.
    dets, labels = multiclass_nms(torch.zeros(2, 0, 4), torch.zeros(2, 0, 3), 100, 0.5, 0.05, 7)
    assert dets.shape == (2, 7, 5) and (labels == -1).all()


class _NmsModule(torch.nn.Module):
    def forward(self, boxes, scores):
        return multiclass_nms(boxes, scores, 20, 0.5, 0.05, 30)


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_multiclass_nms_onnx_matches_eager(tmp_path, exporter):
    gen = np.random.default_rng(7)
    boxes, scores = random_boxes(gen, 2, 50, 3)
    module = _NmsModule()
    path = str(tmp_path / 'nms.onnx')
    args = (torch.from_numpy(boxes), torch.from_numpy(scores))
    if exporter == 'dynamo':
        b, n = torch.export.Dim('batch'), torch.export.Dim('n')
        program = torch.onnx.export(
            module,
            args,
            None,
            dynamo=True,
            external_data=False,
            opset_version=17,
            input_names=['boxes', 'scores'],
            output_names=['dets', 'labels'],
            dynamic_shapes={'boxes': {0: b, 1: n}, 'scores': {0: b, 1: n}},
            custom_translation_table=onnx_translation_table(),
        )
        program.save(path, external_data=False)
    else:
        register_legacy_symbolic(17)
        torch.onnx.export(
            module,
            args,
            path,
            dynamo=False,
            opset_version=17,
            input_names=['boxes', 'scores'],
            output_names=['dets', 'labels'],
            dynamic_axes={'boxes': {0: 'b', 1: 'n'}, 'scores': {0: 'b', 1: 'n'}},
        )
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    import onnx

    assert {op.domain for op in onnx.load(path).opset_import} <= {'', 'ai.onnx'}
    # Other batch and box counts than traced, including fewer pairs than output rows.
    for batch, n in [(2, 50), (3, 80), (1, 4)]:
        boxes, scores = random_boxes(gen, batch, n, 3)
        dets, labels = module(torch.from_numpy(boxes), torch.from_numpy(scores))
        assert (labels >= 0).any()
        ort_dets, ort_labels = session.run(None, {'boxes': boxes, 'scores': scores})
        np.testing.assert_array_equal(ort_labels, labels.numpy())
        np.testing.assert_allclose(ort_dets, dets.numpy(), rtol=1e-6, atol=1e-6)
