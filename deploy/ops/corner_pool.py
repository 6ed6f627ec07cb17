"""Corner pooling (CornerNet): a cumulative maximum along one spatial axis, in standard ONNX ops.

MMCV's ``CornerPool(mode)`` gives every pixel the maximum of its own value and every value in one
direction along a row or a column (``torch.cummax``, on flipped tensors for the reverse modes):

========  ======  ========================================================
mode      axis    each output pixel is the maximum of
========  ======  ========================================================
top       H (2)   itself and every pixel *below* it in its column
bottom    H (2)   itself and every pixel *above* it in its column
left      W (3)   itself and every pixel to its *right* in its row
right     W (3)   itself and every pixel to its *left* in its row
========  ======  ========================================================

ONNX has no cumulative maximum (MMDeploy and MMDetection 2.x needed the custom op
``mmcv::cummax``), so the graph builds one from standard operators, in two parts:

1. a ``MaxPool`` whose window reaches :data:`WINDOW` pixels along the axis (padding counts as
   -inf in ONNX max pooling): exactly the cumulative maximum when the axis is at most that long,
   which covers CornerNet's feature maps up to 1024-pixel inputs in one operator;
2. a ``Loop`` of doubling steps (``y = max(y, y shifted by s)``, ``s = WINDOW, 2 WINDOW, ...``)
   for longer axes. Its trip count, ``ceil(log2(ceil(length / WINDOW)))``, is computed in the graph
   from the input's shape, so any size the graph is given comes out exact; for typical inputs it
   runs zero times.

Maxima are exact, so the graph equals the eager ``torch.cummax`` bit for bit. The op
``deploy::corner_pool`` is opaque to tracing; both exporters translate it with the same onnxscript
functions (see :mod:`deploy.export.onnx_ops`).
"""

import torch
from torch import Tensor

_OP_NAME = 'deploy::corner_pool'

#: mode -> (axis of an NCHW tensor, whether the maximum runs towards the start of the axis)
MODES: dict[str, tuple[int, bool]] = {
    'top': (2, True),
    'bottom': (2, False),
    'left': (3, True),
    'right': (3, False),
}
#: reach of the graph's single MaxPool along the axis (longer axes add doubling steps)
WINDOW = 256


def corner_pool_eager(x: Tensor, dim: int, reverse: bool) -> Tensor:
    """MMCV's ``CornerPool.forward``: ``torch.cummax`` along ``dim``, on the flipped tensor when
    ``reverse`` (so the maximum runs from the end of the axis towards its start)."""
    if reverse:
        return torch.cummax(x.flip(dim), dim=dim).values.flip(dim)
    return torch.cummax(x, dim=dim).values


@torch.library.custom_op(_OP_NAME, mutates_args=())
def _corner_pool_op(x: Tensor, dim: int, reverse: bool) -> Tensor:
    return corner_pool_eager(x, dim, reverse)


@_corner_pool_op.register_fake
def _(x, dim, reverse):
    return torch.empty_like(x)


def corner_pool(x: Tensor, mode: str) -> Tensor:
    """Corner pooling of ``x [B, C, H, W]`` in direction ``mode`` (see the module docstring).

    Returns:
        ``[B, C, H, W]``, the same dtype as ``x``.
    """
    if mode not in MODES:
        raise ValueError(f'corner pool mode must be one of {", ".join(MODES)}, got {mode!r}')
    dim, reverse = MODES[mode]
    return _corner_pool_op(x, dim, reverse)


# --------------------------------------------------------------------------------------------
# ONNX: one onnxscript function per direction (in deploy.ops.onnx_loops), both exporters
# --------------------------------------------------------------------------------------------
def maxpool_attributes(dim: int, reverse: bool) -> tuple[list[int], list[int]]:
    """``(kernel_shape, pads)`` of the MaxPool whose window reaches :data:`WINDOW` pixels along
    ``dim`` in the direction the maximum comes from (pads are ignored by max pooling)."""
    kernel = [WINDOW, 1] if dim == 2 else [1, WINDOW]
    axis = dim - 2  # 0: H, 1: W; pads are [H_begin, W_begin, H_end, W_end]
    pads = [0, 0, 0, 0]
    pads[axis + (2 if reverse else 0)] = WINDOW - 1
    return kernel, pads


def _onnx_functions() -> dict:
    """``reverse -> onnxscript function (x, axis [1] int64; kernel_shape, pads) -> y``: the MaxPool
    and the doubling steps (:mod:`deploy.ops.onnx_loops`)."""
    from .onnx_loops import cummax_towards_end, cummax_towards_start

    return {True: cummax_towards_start, False: cummax_towards_end}


def onnx_translation() -> dict:
    """The torch.export-based exporter's translation of ``deploy::corner_pool``."""
    from onnxscript import opset18 as op

    functions = _onnx_functions()

    def corner_pool_onnx(x, dim: int, reverse: bool):
        kernel, pads = maxpool_attributes(dim, reverse)
        axis = op.Constant(value_ints=[dim])
        return functions[reverse](x, axis, kernel_shape=kernel, pads=pads)

    return {torch.ops.deploy.corner_pool.default: corner_pool_onnx}


def register_legacy_symbolic(opset_version: int) -> None:
    """Register the TorchScript exporter's symbolic of ``deploy::corner_pool`` (same function)."""
    from torch.onnx import symbolic_helper as sym

    from .onnx_functions import check_function_opset

    functions = _onnx_functions()

    def symbolic(g, x, dim, reverse):
        check_function_opset(g.opset, 'corner pooling')
        dim = sym._get_const(dim, 'i', 'dim')
        reverse = bool(sym._get_const(reverse, 'b', 'reverse'))
        kernel, pads = maxpool_attributes(dim, reverse)
        axis = g.op('Constant', value_t=torch.tensor([dim], dtype=torch.long))
        return g.onnxscript_op(
            functions[reverse], x, axis, kernel_shape_i=kernel, pads_i=pads
        ).setType(x.type())

    torch.onnx.register_custom_op_symbolic(_OP_NAME, symbolic, opset_version)
