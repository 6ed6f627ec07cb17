"""Top-k whose k is clamped to the axis length, in eager mode and in both exporters.

ONNX ``TopK`` fails at run time when k exceeds the axis, and the axis length of a dynamic input is
only known at run time, so the clamp has to live in the graph. Each exporter needs its own spelling:
torch.export sees sizes as SymInts (``torch.sym_min``), the TorchScript tracer sees them as traced
tensors (``torch.clamp`` of :func:`~deploy.ops.traced_shape.traced_shape`).
"""

import torch
from torch import Tensor

from .traced_shape import traced_shape


def clamped_topk(x: Tensor, k: int, dim: int = -1) -> tuple[Tensor, Tensor]:
    """``x.topk(min(k, x.shape[dim]), dim)`` that stays dynamic when exported.

    Args:
        x: input tensor; ``dim`` must be its last dimension or a positive index.
        k: requested number of elements; ``<= 0`` means the whole axis (a full sort).

    Returns:
        ``(values, indices)`` sorted by decreasing value (ties: lower index first, as ONNX TopK).
    """
    size = x.shape[dim]
    shape = traced_shape(x)
    if shape is not None:
        axis_len = shape[dim]
        k_eff = axis_len if k <= 0 else torch.clamp(axis_len, max=k)
    elif k <= 0:
        k_eff = size
    else:
        k_eff = torch.sym_min(k, size) if isinstance(size, torch.SymInt) else min(k, size)
    if not (
        torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.compiler.is_compiling()
    ):
        # Eager: a stable sort, so equal scores keep the lower index first like ONNX TopK.
        values, indices = torch.sort(x, dim=dim, descending=True, stable=True)
        return values.narrow(dim, 0, k_eff), indices.narrow(dim, 0, k_eff)
    return x.topk(k_eff, dim=dim)
