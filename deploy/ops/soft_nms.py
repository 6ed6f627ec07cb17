"""Soft-NMS with MMCV's semantics: eager PyTorch, and an ONNX ``Loop`` in a graph (both batched).

MMDetection's CornerNet runs ``batched_nms(boxes, scores, labels, dict(type='soft_nms', ...))``:
MMCV's CPU kernel ``softnms_cpu`` over the candidates of one image, classes kept apart by the
coordinate-offset trick. The kernel keeps the boxes in an array and repeats, for ``i = 0, 1, ...``
while boxes remain:

1. pick the box with the highest current score among positions ``[i, n)`` -- the *first* such
   position in the array wins a tie -- and swap it into position ``i``: it is the ``i``-th
   output, with its current score;
2. multiply the score of every later box by a weight of its IoU with the pick:
   ``exp(-iou^2 / sigma)`` (``gaussian``), ``1 - iou`` where ``iou >= iou_threshold``
   (``linear``), 0 there (``naive``); boxes of other classes have IoU 0 (weight 1);
3. a box whose score drops below ``min_score`` falls out: the last box of the array moves into
   its place (and is weighted there in turn), and ``n`` shrinks.

Picks come out in non-increasing score order, so stopping after ``max_per_img`` picks gives
MMDetection's ``[:max_per_img]``. Ties depend on the array order that step 3's moves create, so
both implementations here keep that order exactly: after each pick, the boxes that stay fill the
places of the fallen ones from the back of the array, the last survivor into the first place
(vectorised: rank the holes from the front and the back survivors from the back, pair equal
ranks). The tests check both against a literal transcription of the C++ kernel.

One deviation, for exactness rather than against it: the IoU is computed on the boxes
themselves, with pairs of different classes set to 0, where MMCV adds a class offset to the
coordinates first (which changes the float rounding of the IoU, not its value). Boxes are
expected to have a positive area (CornerNet's geometry checks guarantee it); a pair with an empty
union has IoU 0 here (NaN in MMCV).

``deploy::soft_nms`` is a custom op, opaque to tracing: its eager body is :func:`soft_nms_eager`;
both exporters translate it into the same onnxscript function, a ``Loop`` whose trip count
``min(max_per_img, num_candidates)`` is a graph value and which stops early once every image of
the batch has run out of boxes. Its loop-carried tensors keep their shapes (what TensorRT's loop
support requires).
"""

import torch
from torch import Tensor

_OP_NAME = 'deploy::soft_nms'

#: MMCV's method numbers
METHODS = {'naive': 0, 'linear': 1, 'gaussian': 2}
#: the columns of the working array: box, score, label
_BOX, _SCORE, _LABEL = slice(0, 4), 4, 5


def _weights(
    picked: Tensor, state: Tensor, iou_threshold: float, sigma: float, method: int
) -> Tensor:
    """Score multipliers of every box of ``state [B, N, 6]`` given the picks ``[B, 6]``."""
    px1, py1, px2, py2 = (picked[:, i : i + 1] for i in range(4))
    x1, y1, x2, y2 = state[..., 0], state[..., 1], state[..., 2], state[..., 3]
    # MMCV's float order: inter / ((area_i + area_j) - inter)
    picked_area = (px2 - px1) * (py2 - py1)
    area = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(px2, x2) - torch.maximum(px1, x1)).clamp(min=0)
    h = (torch.minimum(py2, y2) - torch.maximum(py1, y1)).clamp(min=0)
    inter = w * h
    union = (picked_area + area) - inter
    same_class = state[..., _LABEL] == picked[:, _LABEL : _LABEL + 1]
    iou = torch.where(same_class & (union > 0), inter / union, 0.0)
    if method == METHODS['gaussian']:
        return torch.exp(-(iou * iou) / sigma)
    if method == METHODS['linear']:
        return torch.where(iou >= iou_threshold, 1 - iou, 1.0)
    return torch.where(iou >= iou_threshold, 0.0, 1.0)


def _fill_holes(removed: Tensor, kept: Tensor, front_end: Tensor, positions: Tensor) -> Tensor:
    """Where each position takes its box from after MMCV's removals (``[B, N]`` indices).

    The survivors of a pick end up in the ``front_end - (i + 1)`` places after it: the ones that
    are already there stay, and each hole (a fallen box there) is filled by a survivor from behind
    ``front_end``, the last survivor into the first hole.
    """
    batch, num = positions.shape
    hole = removed & (positions < front_end)
    back = kept & (positions >= front_end)
    hole_rank = torch.cumsum(hole.long(), 1) - 1
    back_rank = torch.flip(torch.cumsum(torch.flip(back.long(), [1]), 1), [1]) - 1
    # back survivors by rank; every other position writes to a slot of its own past the end
    slot = torch.where(back, back_rank, num + positions)
    by_rank = positions.new_zeros(batch, 2 * num).scatter(1, slot, positions)[:, :num]
    return torch.where(hole, torch.gather(by_rank, 1, hole_rank.clamp(min=0)), positions)


def soft_nms_eager(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    valid: Tensor,
    iou_threshold: float,
    sigma: float,
    min_score: float,
    method: int,
    max_per_img: int,
) -> tuple[Tensor, Tensor]:
    """Batched soft-NMS (see the module docstring), the eager body of ``deploy::soft_nms``.

    Args:
        boxes: ``[B, N, 4]`` float32 ``x1, y1, x2, y2``.
        scores: ``[B, N]`` float32.
        labels: ``[B, N]`` int64 classes (boxes of different classes never interact).
        valid: ``[B, N]`` bool: the candidates; they enter MMCV's array in this order.
        iou_threshold, sigma, min_score: MMCV's ``soft_nms`` arguments.
        method: :data:`METHODS` value.
        max_per_img: output rows ``K`` (the first ``K`` picks).

    Returns:
        ``dets [B, K, 5]`` (box, score after decay) in pick order and ``labels [B, K]`` int64;
        rows after the last pick have a zero box, score 0 and label -1.
    """
    batch, num = scores.shape
    positions = torch.arange(num, device=scores.device).expand(batch, num)
    # The candidates, in their order, at the front of the array.
    num_valid = valid.sum(1, keepdim=True)
    dest = torch.where(
        valid, torch.cumsum(valid.long(), 1) - 1, num_valid + torch.cumsum((~valid).long(), 1) - 1
    )
    src = torch.empty_like(dest).scatter_(1, dest, positions)
    state = torch.cat([boxes, scores[..., None], labels[..., None].to(boxes.dtype)], -1)
    state = torch.gather(state, 1, src[..., None].expand(-1, -1, 6))
    n = num_valid
    out = state.new_zeros(batch, max_per_img, 6)
    out[..., _LABEL] = -1
    padding = out[:, 0].clone()
    for i in range(min(max_per_img, num)):
        live = i < n  # [B, 1]
        if not bool(live.any()):
            break
        # 1. the first maximum among positions [i, n), swapped into position i
        active = (positions >= i) & (positions < n)
        best = torch.argmax(torch.where(active, state[..., _SCORE], -torch.inf), 1, keepdim=True)
        best = torch.where(live, best, i)
        perm = torch.where(positions == i, best, torch.where(positions == best, i, positions))
        state = torch.gather(state, 1, perm[..., None].expand(-1, -1, 6))
        picked = state[:, i]
        out[:, i] = torch.where(live, picked, padding)
        # 2. decay the boxes after it
        rest = (positions > i) & (positions < n)
        weight = _weights(picked, state, iou_threshold, sigma, method)
        scores_now = torch.where(rest, state[..., _SCORE] * weight, state[..., _SCORE])
        state = torch.cat([state[..., _BOX], scores_now[..., None], state[..., _LABEL:]], -1)
        # 3. boxes below min_score fall out; the survivors close the gaps
        removed = rest & (scores_now < min_score)
        kept = rest & ~removed
        front_end = i + 1 + kept.sum(1, keepdim=True)
        src = _fill_holes(removed, kept, front_end, positions)
        state = torch.gather(state, 1, src[..., None].expand(-1, -1, 6))
        n = torch.where(live, front_end, n)
    return out[..., :5].contiguous(), out[..., _LABEL].long()


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    method: str = 'linear',
    max_num: int = -1,
) -> tuple[Tensor, Tensor]:
    """Class-aware soft-NMS of one image (MMDetection's ``batched_nms`` with ``soft_nms``).

    Args:
        boxes: ``[N, 4]``; scores: ``[N]``; labels: ``[N]`` int.
        iou_threshold, sigma, min_score, method: MMCV's ``soft_nms`` arguments (its defaults).
        max_num: stop after this many picks (``<= 0``: until no box is left).

    Returns:
        ``dets [K, 5]`` (box and decayed score) in pick order and ``labels [K]``.
    """
    if method not in METHODS:
        raise ValueError(f'soft-NMS method must be one of {", ".join(METHODS)}, got {method!r}')
    num = len(scores)
    rows = num if max_num <= 0 else min(max_num, num)
    if rows == 0:
        return boxes.new_zeros(0, 5), labels.new_zeros(0)
    dets, out_labels = soft_nms_eager(
        boxes[None].float(),
        scores[None].float(),
        labels[None].long(),
        torch.ones(1, num, dtype=torch.bool, device=boxes.device),
        float(iou_threshold),
        float(sigma),
        float(min_score),
        METHODS[method],
        rows,
    )
    picked = out_labels[0] >= 0
    return dets[0][picked], out_labels[0][picked]


@torch.library.custom_op(_OP_NAME, mutates_args=())
def _soft_nms_op(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    valid: Tensor,
    iou_threshold: float,
    sigma: float,
    min_score: float,
    method: int,
    max_per_img: int,
) -> tuple[Tensor, Tensor]:
    return soft_nms_eager(
        boxes, scores, labels, valid, iou_threshold, sigma, min_score, method, max_per_img
    )


@_soft_nms_op.register_fake
def _(boxes, scores, labels, valid, iou_threshold, sigma, min_score, method, max_per_img):
    batch = scores.shape[0]
    return (
        boxes.new_empty(batch, max_per_img, 5),
        labels.new_empty(batch, max_per_img, dtype=torch.long),
    )


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    valid: Tensor,
    iou_threshold: float,
    sigma: float,
    min_score: float,
    method: str,
    max_per_img: int,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS of a batch with fixed-size outputs (the op the graphs export; arguments and
    outputs as :func:`soft_nms_eager`, ``method`` by name)."""
    if method not in METHODS:
        raise ValueError(f'soft-NMS method must be one of {", ".join(METHODS)}, got {method!r}')
    if max_per_img <= 0:
        raise ValueError(f'max_per_img must be positive, got {max_per_img}')
    return _soft_nms_op(
        boxes.float(),
        scores.float(),
        labels.long(),
        valid.bool(),
        float(iou_threshold),
        float(sigma),
        float(min_score),
        METHODS[method],
        int(max_per_img),
    )


# --------------------------------------------------------------------------------------------
# ONNX: one onnxscript function (a Loop, in deploy.ops.onnx_loops), called by both exporters
# --------------------------------------------------------------------------------------------
def onnx_translation() -> dict:
    """The torch.export-based exporter's translation of ``deploy::soft_nms``."""
    from onnxscript import opset18 as op

    from .onnx_loops import soft_nms_loop as loop

    def soft_nms_onnx(
        boxes, scores, labels, valid, iou_threshold, sigma, min_score, method, max_per_img
    ):
        floats = (op.Constant(value_floats=[float(v)]) for v in (iou_threshold, sigma, min_score))
        ints = (op.Constant(value_ints=[int(v)]) for v in (method, max_per_img))
        return loop(boxes, scores, labels, valid, *floats, *ints)

    return {torch.ops.deploy.soft_nms.default: soft_nms_onnx}


def register_legacy_symbolic(opset_version: int) -> None:
    """Register the TorchScript exporter's symbolic of ``deploy::soft_nms`` (the same function)."""
    from torch.onnx import symbolic_helper as sym

    from .onnx_functions import check_function_opset
    from .onnx_loops import soft_nms_loop as loop

    def symbolic(
        g, boxes, scores, labels, valid, iou_threshold, sigma, min_score, method, max_per_img
    ):
        check_function_opset(g.opset, 'soft-NMS')
        values = (
            sym._get_const(iou_threshold, 'f', 'iou_threshold'),
            sym._get_const(sigma, 'f', 'sigma'),
            sym._get_const(min_score, 'f', 'min_score'),
            sym._get_const(method, 'i', 'method'),
            sym._get_const(max_per_img, 'i', 'max_per_img'),
        )
        consts = [
            g.op('Constant', value_t=torch.tensor([v], dtype=torch.float32)) for v in values[:3]
        ] + [g.op('Constant', value_t=torch.tensor([v], dtype=torch.long)) for v in values[3:]]
        dets, out_labels = g.onnxscript_op(loop, boxes, scores, labels, valid, *consts, outputs=2)
        batch = sym._get_tensor_dim_size(scores, 0)
        dets.setType(boxes.type().with_sizes([batch, values[-1], 5]))
        out_labels.setType(labels.type().with_sizes([batch, values[-1]]))
        return dets, out_labels

    torch.onnx.register_custom_op_symbolic(_OP_NAME, symbolic, opset_version)
