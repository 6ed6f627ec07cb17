"""The one place that reads a tensor's sizes as a graph value while the TorchScript tracer runs.

The tracer records ``x.shape[d]`` as a Python int, so a size read that way is frozen into the
graph as a constant and the export is no longer dynamic. ``torch._shape_as_tensor`` records an
ONNX ``Shape`` instead. torch.export needs no such branch (its sizes are symbolic), nor does eager
mode, so callers keep their own code for those and ask :func:`traced_shape` first.
"""

import torch
from torch import Tensor


def traced_shape(x: Tensor) -> Tensor | None:
    """``x``'s shape as an int64 tensor ``[x.dim()]`` recorded in the traced graph while the
    TorchScript tracer runs; ``None`` otherwise (eager mode, torch.export)."""
    if torch.jit.is_tracing():
        return torch._shape_as_tensor(x)
    return None
