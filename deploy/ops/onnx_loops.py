"""The ONNX ``Loop`` bodies of corner pooling and soft-NMS, as onnxscript functions.

Kept apart from the ops (:mod:`deploy.ops.corner_pool`, :mod:`deploy.ops.soft_nms`) because
onnxscript resolves a script function's names in its module and takes seconds to import: this
module is imported only when a graph is exported. Both exporters call these same functions (see
:mod:`deploy.export.onnx_ops`); each mirrors its op's eager code step for step.
"""

from collections.abc import Sequence

from onnxscript import BOOL, FLOAT, INT64, script
from onnxscript import opset18 as op
from onnxscript.values import Opset

from .onnx_functions import FUNCTION_DOMAIN

domain = Opset(FUNCTION_DOMAIN, 1)

# --------------------------------------------------------------------------------------------
# corner pooling (deploy.ops.corner_pool): a MaxPool, then doubling steps
# --------------------------------------------------------------------------------------------
# The MaxPool's window (kernel_shape, pads: deploy.ops.corner_pool.maxpool_attributes) reaches
# WINDOW = 256 pixels along the axis. Each step after it: y = max(y, y shifted by s along the
# axis) with s = WINDOW, 2 WINDOW, ... The shifted copy is an edge-padded slice, so no fill value
# is needed. The trip count is ceil(log2(ceil(length / WINDOW))), 0 when the MaxPool already
# reached the whole axis; the float log cannot undercount (log2 of a quotient above a power of two
# exceeds it by > 1e-3).


@script(domain)
def cummax_towards_start(
    x: FLOAT, axis: INT64, kernel_shape: Sequence[int], pads: Sequence[int]
) -> FLOAT:
    y = op.MaxPool(x, kernel_shape=kernel_shape, pads=pads)
    length = op.Gather(op.Shape(y), axis)
    blocks = op.Div(op.Add(length, op.Constant(value_ints=[255])), op.Constant(value_ints=[256]))
    log2 = op.Div(op.Log(op.Cast(blocks, to=1)), op.Constant(value_floats=[0.6931471805599453]))
    steps = op.Squeeze(op.Cast(op.Ceil(log2), to=7))
    shift = op.Constant(value_ints=[256])
    zero = op.Constant(value_ints=[0])
    for _ in range(steps):
        padded = op.Pad(y, op.Concat(zero, shift, axis=0), None, axis, mode='edge')
        y = op.Max(y, op.Slice(padded, shift, op.Add(shift, length), axis))
        shift = op.Mul(shift, op.Constant(value_ints=[2]))
    return y


@script(domain)
def cummax_towards_end(
    x: FLOAT, axis: INT64, kernel_shape: Sequence[int], pads: Sequence[int]
) -> FLOAT:
    y = op.MaxPool(x, kernel_shape=kernel_shape, pads=pads)
    length = op.Gather(op.Shape(y), axis)
    blocks = op.Div(op.Add(length, op.Constant(value_ints=[255])), op.Constant(value_ints=[256]))
    log2 = op.Div(op.Log(op.Cast(blocks, to=1)), op.Constant(value_floats=[0.6931471805599453]))
    steps = op.Squeeze(op.Cast(op.Ceil(log2), to=7))
    shift = op.Constant(value_ints=[256])
    zero = op.Constant(value_ints=[0])
    for _ in range(steps):
        padded = op.Pad(y, op.Concat(shift, zero, axis=0), None, axis, mode='edge')
        y = op.Max(y, op.Slice(padded, zero, length, axis))
        shift = op.Mul(shift, op.Constant(value_ints=[2]))
    return y


# --------------------------------------------------------------------------------------------
# soft-NMS (deploy.ops.soft_nms.soft_nms_eager, step for step)
# --------------------------------------------------------------------------------------------
@script(domain)
def soft_nms_loop(
    boxes: FLOAT,
    scores: FLOAT,
    labels: INT64,
    valid: BOOL,
    iou_threshold: FLOAT,
    sigma: FLOAT,
    min_score: FLOAT,
    method: INT64,
    max_per_img: INT64,
) -> tuple[FLOAT, INT64]:
    zero = op.Constant(value_ints=[0])
    one = op.Constant(value_ints=[1])
    axis1 = op.Constant(value_ints=[1])
    axis2 = op.Constant(value_ints=[2])
    fzero = op.Constant(value_floats=[0.0])
    fone = op.Constant(value_floats=[1.0])
    shape = op.Shape(scores)  # [B, N]
    num = op.Slice(shape, axis1, op.Constant(value_ints=[2]))
    positions = op.Expand(
        op.Unsqueeze(
            op.Range(op.Constant(value_int=0), op.Squeeze(num), op.Constant(value_int=1)), zero
        ),
        shape,
    )
    state_shape = op.Concat(shape, op.Constant(value_ints=[6]), axis=0)
    # the candidates, in their order, at the front of the array (a stable partition)
    valid_f = op.Cast(valid, to=1)
    num_valid = op.ReduceSum(valid_f, axis1, keepdims=1)
    valid_rank = op.Sub(op.CumSum(valid_f, axis1), fone)
    invalid_rank = op.Add(num_valid, op.Sub(op.CumSum(op.Sub(fone, valid_f), axis1), fone))
    dest = op.Cast(op.Where(valid, valid_rank, invalid_rank), to=7)
    src = op.ScatterElements(positions, dest, positions, axis=1)
    state = op.Concat(
        boxes, op.Unsqueeze(scores, axis2), op.Unsqueeze(op.Cast(labels, to=1), axis2), axis=2
    )
    state = op.GatherElements(state, op.Expand(op.Unsqueeze(src, axis2), state_shape), axis=1)
    n = op.Cast(num_valid, to=7)  # [B, 1]
    # outputs: padding rows (zero box, score 0, label -1) overwritten pick by pick
    out_shape = op.Concat(op.Slice(shape, zero, axis1), max_per_img, axis=0)
    out = op.Concat(
        op.Expand(
            op.Constant(value_floats=[0.0, 0.0, 0.0, 0.0, 0.0]),
            op.Concat(out_shape, op.Constant(value_ints=[5]), axis=0),
        ),
        op.Expand(op.Constant(value_floats=[-1.0]), op.Concat(out_shape, one, axis=0)),
        axis=2,
    )
    padding = op.Constant(value_floats=[0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    rows = op.Reshape(
        op.Range(op.Constant(value_int=0), op.Squeeze(max_per_img), op.Constant(value_int=1)),
        op.Constant(value_ints=[1, -1, 1]),
    )
    trips = op.Squeeze(op.Min(max_per_img, num))
    for i in range(trips):
        live = op.Less(i, n)
        # 1. the first maximum among positions [i, n), swapped into position i
        score = op.Gather(state, op.Constant(value_int=4), axis=2)
        active = op.And(op.GreaterOrEqual(positions, i), op.Less(positions, n))
        masked = op.Where(active, score, op.Constant(value_floats=[-3.4028234663852886e38]))
        best = op.ArgMax(masked, axis=1, keepdims=1, select_last_index=0)
        best = op.Where(live, best, i)
        perm = op.Where(
            op.Equal(positions, i), best, op.Where(op.Equal(positions, best), i, positions)
        )
        state = op.GatherElements(state, op.Expand(op.Unsqueeze(perm, axis2), state_shape), axis=1)
        picked = op.Gather(state, i, axis=1)  # [B, 6]
        row = op.Where(live, picked, padding)
        out = op.Where(op.Equal(rows, i), op.Unsqueeze(row, axis1), out)
        # 2. decay the boxes after it: MMCV's IoU, per class
        px1 = op.Gather(picked, op.Constant(value_ints=[0]), axis=1)
        py1 = op.Gather(picked, op.Constant(value_ints=[1]), axis=1)
        px2 = op.Gather(picked, op.Constant(value_ints=[2]), axis=1)
        py2 = op.Gather(picked, op.Constant(value_ints=[3]), axis=1)
        plabel = op.Gather(picked, op.Constant(value_ints=[5]), axis=1)
        x1 = op.Gather(state, op.Constant(value_int=0), axis=2)
        y1 = op.Gather(state, op.Constant(value_int=1), axis=2)
        x2 = op.Gather(state, op.Constant(value_int=2), axis=2)
        y2 = op.Gather(state, op.Constant(value_int=3), axis=2)
        score = op.Gather(state, op.Constant(value_int=4), axis=2)
        label = op.Gather(state, op.Constant(value_int=5), axis=2)
        picked_area = op.Mul(op.Sub(px2, px1), op.Sub(py2, py1))
        area = op.Mul(op.Sub(x2, x1), op.Sub(y2, y1))
        w = op.Max(op.Sub(op.Min(px2, x2), op.Max(px1, x1)), fzero)
        h = op.Max(op.Sub(op.Min(py2, y2), op.Max(py1, y1)), fzero)
        inter = op.Mul(w, h)
        union = op.Sub(op.Add(picked_area, area), inter)
        same = op.And(op.Equal(label, plabel), op.Greater(union, fzero))
        iou = op.Where(same, op.Div(inter, union), fzero)
        gaussian = op.Exp(op.Div(op.Neg(op.Mul(iou, iou)), sigma))
        overlaps = op.GreaterOrEqual(iou, iou_threshold)
        linear = op.Where(overlaps, op.Sub(fone, iou), fone)
        naive = op.Where(overlaps, fzero, fone)
        weight = op.Where(
            op.Equal(method, op.Constant(value_ints=[2])),
            gaussian,
            op.Where(op.Equal(method, one), linear, naive),
        )
        rest = op.And(op.Greater(positions, i), op.Less(positions, n))
        score = op.Where(rest, op.Mul(score, weight), score)
        state = op.Concat(
            op.Slice(state, zero, op.Constant(value_ints=[4]), axis2),
            op.Unsqueeze(score, axis2),
            op.Unsqueeze(label, axis2),
            axis=2,
        )
        # 3. boxes below min_score fall out; survivors from the back fill their places
        removed = op.And(rest, op.Less(score, min_score))
        kept = op.And(rest, op.Not(removed))
        survivors = op.Cast(op.ReduceSum(op.Cast(kept, to=1), axis1, keepdims=1), to=7)
        front_end = op.Add(op.Add(i, one), survivors)
        hole = op.And(removed, op.Less(positions, front_end))
        back = op.And(kept, op.GreaterOrEqual(positions, front_end))
        hole_rank = op.Sub(op.Cast(op.CumSum(op.Cast(hole, to=1), axis1), to=7), one)
        back_rank = op.Sub(op.Cast(op.CumSum(op.Cast(back, to=1), axis1, reverse=1), to=7), one)
        slot = op.Where(back, back_rank, op.Add(num, positions))
        slots = op.Concat(positions, positions, axis=1)  # [B, 2N], overwritten everywhere
        by_rank = op.Slice(op.ScatterElements(slots, slot, positions, axis=1), zero, num, axis1)
        src = op.Where(hole, op.GatherElements(by_rank, op.Max(hole_rank, zero), axis=1), positions)
        state = op.GatherElements(state, op.Expand(op.Unsqueeze(src, axis2), state_shape), axis=1)
        n = op.Where(live, front_end, n)
        # stop once no image of the batch has a box left for the next pick
        next_live = op.Cast(op.Less(op.Add(i, one), n), to=1)
        done = op.Not(op.Cast(op.ReduceMax(next_live, keepdims=0), to=9))
        if done:
            break
    dets = op.Slice(out, zero, op.Constant(value_ints=[5]), axis2)
    out_labels = op.Cast(
        op.Squeeze(
            op.Slice(out, op.Constant(value_ints=[5]), op.Constant(value_ints=[6]), axis2), axis2
        ),
        to=7,
    )
    return dets, out_labels
