"""Fixed-size multi-class NMS: eager PyTorch in Python, ONNX ``NonMaxSuppression`` in a graph.

One custom op, ``deploy::multiclass_nms``, carries the whole data-dependent part of detection
post-processing. Tracing never looks inside it, so its Python control flow never reaches the graph;
each exporter gets a translation written with standard ONNX operators only (no custom domain):

    NonMaxSuppression -> GatherND -> ScatterND -> TopK -> GatherElements -> Where/Pad

Semantics (identical in all three implementations):
    * a (box, class) pair is a candidate when its score is strictly above ``score_threshold``;
    * per class, greedy NMS (suppress IoU strictly greater than ``iou_threshold``), keeping at most
      ``max_output_boxes_per_class`` boxes of that class;
    * the survivors of all classes are ranked by score (ties: lower ``class * N + box`` first, which
      is ONNX ``TopK``'s tie rule) and the best ``keep_top_k`` are returned;
    * outputs always have ``keep_top_k`` rows: padding rows have a zero box, score 0 and label -1.
"""

import torch
from torch import Tensor

from .nms import nms

_OP_NAME = 'deploy::multiclass_nms'


@torch.library.custom_op(_OP_NAME, mutates_args=())
def _multiclass_nms_op(
    boxes: Tensor,
    scores: Tensor,
    max_output_boxes_per_class: int,
    iou_threshold: float,
    score_threshold: float,
    keep_top_k: int,
) -> tuple[Tensor, Tensor]:
    batch, num_boxes, num_classes = scores.shape
    dets = boxes.new_zeros(batch, keep_top_k, 5)
    labels = torch.full((batch, keep_top_k), -1, dtype=torch.long, device=boxes.device)
    for b in range(batch):
        kept_scores, kept_flat = [], []
        for c in range(num_classes):
            candidates = torch.nonzero(scores[b, :, c] > score_threshold).flatten()
            if candidates.numel() == 0:
                continue
            keep = candidates[
                nms(
                    boxes[b, candidates],
                    scores[b, candidates, c],
                    iou_threshold,
                    max_keep=max_output_boxes_per_class,
                )
            ]
            kept_scores.append(scores[b, keep, c])
            kept_flat.append(c * num_boxes + keep)
        if not kept_scores:
            continue
        kept_scores, kept_flat = torch.cat(kept_scores), torch.cat(kept_flat)
        # Stable sort of the flat-index-ordered survivors = TopK's lower-index-first tie rule.
        by_index = torch.argsort(kept_flat)
        kept_scores, kept_flat = kept_scores[by_index], kept_flat[by_index]
        top = torch.sort(kept_scores, descending=True, stable=True).indices[:keep_top_k]
        n = len(top)
        box_idx = kept_flat[top] % num_boxes
        dets[b, :n, :4] = boxes[b, box_idx]
        dets[b, :n, 4] = kept_scores[top]
        labels[b, :n] = kept_flat[top] // num_boxes
    return dets, labels


@_multiclass_nms_op.register_fake
def _(boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold, keep_top_k):
    batch = scores.shape[0]
    return (
        boxes.new_empty(batch, keep_top_k, 5),
        boxes.new_empty(batch, keep_top_k, dtype=torch.long),
    )


def multiclass_nms(
    boxes: Tensor,
    scores: Tensor,
    max_output_boxes_per_class: int,
    iou_threshold: float,
    score_threshold: float,
    keep_top_k: int,
) -> tuple[Tensor, Tensor]:
    """Per-class NMS with fixed-size padded outputs (see the module docstring for semantics).

    Args:
        boxes: ``[B, N, 4]`` float32 boxes ``x1, y1, x2, y2``, shared by all classes.
        scores: ``[B, N, C]`` float32 scores in ``[0, 1]``; zero entries are never selected.
        max_output_boxes_per_class: per-class cap; ``<= 0`` or more than ``keep_top_k`` means
            ``keep_top_k`` (which changes nothing: no class can contribute more than that).
        iou_threshold: IoU above which a lower-scored box of the same class is suppressed.
        score_threshold: minimum score (exclusive); clamped to ``>= 0`` because score-0 rows mark
            padding.
        keep_top_k: number of output rows ``K`` (``max_per_img``).

    Returns:
        ``dets [B, K, 5]`` (box and score) and ``labels [B, K]`` int64 (-1 on padding rows).
    """
    if keep_top_k <= 0:
        raise ValueError(f'keep_top_k must be positive, got {keep_top_k}')
    cap = (
        keep_top_k
        if max_output_boxes_per_class <= 0
        else min(max_output_boxes_per_class, keep_top_k)
    )
    return _multiclass_nms_op(
        boxes.float(),
        scores.float(),
        int(cap),
        float(iou_threshold),
        float(max(score_threshold, 0.0)),
        int(keep_top_k),
    )


# --------------------------------------------------------------------------------------------
# ONNX translations: one per exporter, node for node the same graph.
#
# The ops with control flow (corner pooling, soft-NMS) are one onnxscript function that both
# exporters call, the TorchScript one through ``g.onnxscript_op``. Such a function carries its own
# ONNX opset (deploy.ops.onnx_functions.FUNCTION_OPSET, 18), and in a graph of another opset it
# mixes the two (check_function_opset refuses that): fine for those ops, which need opset 18
# anyway. Multiclass NMS is in every detector and exports from opset 16 (MIN_OPSET) with either
# exporter; as one function it would raise every TorchScript export's minimum opset to 18
# (``--opset-version 16`` and ``17`` work today). So the TorchScript exporter keeps a symbolic
# function. tests/test_nms.py holds both translations to the eager op at opset 17.
# --------------------------------------------------------------------------------------------
# ONNX translation for the torch.export-based exporter (onnxscript).
# --------------------------------------------------------------------------------------------
def _onnxscript_translation():
    from onnxscript import opset18 as op

    def multiclass_nms_onnx(
        boxes,
        scores,
        max_output_boxes_per_class: int,
        iou_threshold: float,
        score_threshold: float,
        keep_top_k: int,
    ):
        scores_cn = op.Transpose(scores, perm=[0, 2, 1])  # [B, C, N]: NonMaxSuppression layout
        selected = op.NonMaxSuppression(
            boxes,
            scores_cn,
            op.Constant(value_ints=[max_output_boxes_per_class]),
            op.Constant(value_floats=[iou_threshold]),
            op.Constant(value_floats=[score_threshold]),
        )  # [M, 3] rows (batch, class, box)
        # Scatter the selected scores into an all-zero [B, C, N] and rank them per image.
        selected_scores = op.GatherND(scores_cn, selected)
        kept = op.ScatterND(
            op.Mul(scores_cn, op.Constant(value_float=0.0)), selected, selected_scores
        )
        flat = op.Reshape(kept, op.Constant(value_ints=[0, -1]))  # [B, C*N]
        num_flat = op.Shape(flat, start=1, end=2)
        k = op.Min(op.Constant(value_ints=[keep_top_k]), num_flat)  # TopK fails on k > axis
        top_scores, top_idx = op.TopK(flat, k, axis=-1, largest=1, sorted=1)
        num_boxes = op.Shape(scores_cn, start=2, end=3)
        labels = op.Div(top_idx, num_boxes)
        box_idx = op.Mod(top_idx, num_boxes)
        gather_idx = op.Expand(
            op.Unsqueeze(box_idx, op.Constant(value_ints=[2])),
            op.Concat(op.Shape(box_idx), op.Constant(value_ints=[4]), axis=0),
        )
        top_boxes = op.GatherElements(boxes, gather_idx, axis=1)
        valid = op.Greater(top_scores, op.Constant(value_float=0.0))
        dets = op.Concat(top_boxes, op.Unsqueeze(top_scores, op.Constant(value_ints=[2])), axis=2)
        dets = op.Where(
            op.Unsqueeze(valid, op.Constant(value_ints=[2])), dets, op.Constant(value_float=0.0)
        )
        labels = op.Where(valid, labels, op.Constant(value_int=-1))
        # Pad to exactly keep_top_k rows when C*N < keep_top_k.
        missing = op.Sub(op.Constant(value_ints=[keep_top_k]), k)
        zero = op.Constant(value_ints=[0])
        dets = op.Pad(
            dets,
            op.Concat(zero, zero, zero, zero, missing, zero, axis=0),
            op.Constant(value_float=0.0),
        )
        labels = op.Pad(
            labels, op.Concat(zero, zero, zero, missing, axis=0), op.Constant(value_int=-1)
        )
        return dets, labels

    return multiclass_nms_onnx


def onnx_translation_table() -> dict:
    """``custom_translation_table`` entries for ``torch.onnx.export(..., dynamo=True)``."""
    return {torch.ops.deploy.multiclass_nms.default: _onnxscript_translation()}


# --------------------------------------------------------------------------------------------
# ONNX translation for the legacy TorchScript exporter (symbolic function).
# --------------------------------------------------------------------------------------------
def _symbolic(
    g, boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold, keep_top_k
):
    from torch.onnx import symbolic_helper as sym

    cap = sym._get_const(max_output_boxes_per_class, 'i', 'max_output_boxes_per_class')
    iou = sym._get_const(iou_threshold, 'f', 'iou_threshold')
    score_thr = sym._get_const(score_threshold, 'f', 'score_threshold')
    top_k = sym._get_const(keep_top_k, 'i', 'keep_top_k')

    def const(value, dtype):
        return g.op('Constant', value_t=torch.tensor(value, dtype=dtype))

    scores_cn = g.op('Transpose', scores, perm_i=[0, 2, 1])
    selected = g.op(
        'NonMaxSuppression',
        boxes,
        scores_cn,
        const([cap], torch.long),
        const([iou], torch.float),
        const([score_thr], torch.float),
    )
    selected_scores = g.op('GatherND', scores_cn, selected)
    kept = g.op(
        'ScatterND', g.op('Mul', scores_cn, const(0.0, torch.float)), selected, selected_scores
    )
    flat = g.op('Reshape', kept, const([0, -1], torch.long))
    num_flat = g.op('Slice', g.op('Shape', flat), const([1], torch.long), const([2], torch.long))
    k = g.op('Min', const([top_k], torch.long), num_flat)
    top_scores, top_idx = g.op('TopK', flat, k, axis_i=-1, largest_i=1, sorted_i=1, outputs=2)
    num_boxes = g.op(
        'Slice', g.op('Shape', scores_cn), const([2], torch.long), const([3], torch.long)
    )
    labels = g.op('Div', top_idx, num_boxes)
    box_idx = g.op('Mod', top_idx, num_boxes)
    gather_idx = g.op(
        'Expand',
        g.op('Unsqueeze', box_idx, const([2], torch.long)),
        g.op('Concat', g.op('Shape', box_idx), const([4], torch.long), axis_i=0),
    )
    top_boxes = g.op('GatherElements', boxes, gather_idx, axis_i=1)
    valid = g.op('Greater', top_scores, const(0.0, torch.float))
    dets = g.op(
        'Concat', top_boxes, g.op('Unsqueeze', top_scores, const([2], torch.long)), axis_i=2
    )
    dets = g.op(
        'Where', g.op('Unsqueeze', valid, const([2], torch.long)), dets, const(0.0, torch.float)
    )
    labels = g.op('Where', valid, labels, const(-1, torch.long))
    missing = g.op('Sub', const([top_k], torch.long), k)
    zero = const([0], torch.long)
    dets = g.op(
        'Pad',
        dets,
        g.op('Concat', zero, zero, zero, zero, missing, zero, axis_i=0),
        const(0.0, torch.float),
    )
    labels = g.op(
        'Pad', labels, g.op('Concat', zero, zero, zero, missing, axis_i=0), const(-1, torch.long)
    )
    return dets, labels


def register_legacy_symbolic(opset_version: int) -> None:
    """Register the TorchScript-exporter symbolic of ``deploy::multiclass_nms``."""
    torch.onnx.register_custom_op_symbolic(_OP_NAME, _symbolic, opset_version)
