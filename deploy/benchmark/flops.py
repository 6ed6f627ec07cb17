"""Multiply-accumulate counting on the PyTorch model, at the shape being benchmarked.

What is counted (one MAC = one multiply + one add; ``flops = 2 * macs``):

* ``nn.Conv1d/2d/3d``: ``output.numel() * in_channels / groups * prod(kernel_size)``;
* ``nn.ConvTranspose1d/2d/3d``: ``input.numel() * out_channels / groups * prod(kernel_size)``;
* ``nn.Linear``: ``output.numel() * in_features``;
* ``torch.matmul`` / ``@`` / ``torch.mm`` / ``torch.bmm``: ``output.numel() * K``;
* ``F.conv*`` / ``F.linear`` called outside those modules, by the same rules.

Modules are counted with forward hooks; bare function calls with a ``TorchFunctionMode`` that skips
calls made inside a hooked module, so nothing is counted twice. Biases, normalisation, activations,
pooling, resizing, RoIAlign, box decoding and NMS are not counted: they are a small share of the
arithmetic, and their cost is memory traffic, not FLOPs.

The count runs the detector's deploy path (``forward_deploy``, the graph that is exported), so for
two-stage models the RoI heads are counted for the fixed number of RoIs that path processes.
"""

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

METHOD = 'pytorch-forward-hooks'

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_MATMUL = {
    torch.matmul,
    torch.mm,
    torch.bmm,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.Tensor.__rmatmul__,
    torch.Tensor.mm,
    torch.Tensor.bmm,
}
_FUNCTIONAL_CONV = {
    torch.conv1d,
    torch.conv2d,
    torch.conv3d,
    nn.functional.conv1d,
    nn.functional.conv2d,
    nn.functional.conv3d,
}
_FUNCTIONAL_LINEAR = {nn.functional.linear, torch._C._nn.linear}


@dataclass
class FlopCount:
    """MACs of one forward pass of a batch.

    Attributes:
        macs: multiply-accumulates of the counted layers.
        by_type: MACs per layer type (``Conv2d``, ``Linear``, ``matmul``, ...).
        batch_size: images in the batch the count was taken on.
    """

    macs: int = 0
    by_type: dict = field(default_factory=dict)
    batch_size: int = 1
    method: str = METHOD

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def add(self, kind: str, macs: int) -> None:
        self.macs += int(macs)
        self.by_type[kind] = self.by_type.get(kind, 0) + int(macs)

    def to_dict(self) -> dict:
        return dict(
            macs=self.macs,
            flops=self.flops,
            gflops=self.flops / 1e9,
            gflops_per_image=self.flops / 1e9 / max(self.batch_size, 1),
            batch_size=self.batch_size,
            by_type=dict(sorted(self.by_type.items())),
            method=self.method,
        )


def conv_macs(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of a convolution (or transposed convolution) module for one call."""
    kernel = math.prod(module.kernel_size)
    if isinstance(module, _CONV_T):
        return inputs.numel() * module.out_channels // module.groups * kernel
    return output.numel() * (module.in_channels // module.groups) * kernel


def _matmul_macs(a: torch.Tensor, out: torch.Tensor) -> int:
    return out.numel() * a.shape[-1]


class _FunctionCounter(TorchFunctionMode):
    def __init__(self, count: FlopCount, depth: list[int]):
        super().__init__()
        self.count, self.depth = count, depth

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _MATMUL:
            self.count.add('matmul', _matmul_macs(args[0], out))
        elif self.depth[0] == 0 and func in _FUNCTIONAL_CONV:
            weight = args[1] if len(args) > 1 else kwargs['weight']
            self.count.add('functional_conv', out.numel() * math.prod(weight.shape[1:]))
        elif self.depth[0] == 0 and func in _FUNCTIONAL_LINEAR:
            weight = args[1] if len(args) > 1 else kwargs['weight']
            self.count.add('functional_linear', out.numel() * weight.shape[-1])
        return out


def count_macs(model: nn.Module, forward, batch_size: int = 1) -> FlopCount:
    """Run ``forward()`` (a closure calling ``model``) once and count its MACs.

    Args:
        model: the module whose conv/linear submodules are hooked.
        forward: a no-argument callable running the forward pass to count.
        batch_size: recorded with the count, for per-image figures.
    """
    count = FlopCount(batch_size=batch_size)
    depth = [0]

    def enter(module, args):
        depth[0] += 1

    def leave(module, args, output):
        depth[0] -= 1
        if isinstance(module, (*_CONV, *_CONV_T)):
            count.add(type(module).__name__, conv_macs(module, args[0], output))
        elif isinstance(module, nn.Linear):
            count.add('Linear', output.numel() * module.in_features)

    handles = []
    for module in model.modules():
        if isinstance(module, (*_CONV, *_CONV_T, nn.Linear)):
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
    try:
        with torch.no_grad(), _FunctionCounter(count, depth):
            forward()
    finally:
        for handle in handles:
            handle.remove()
    return count


def count_detector_flops(
    detector: nn.Module, img: torch.Tensor, img_shape: torch.Tensor
) -> FlopCount:
    """MACs of ``detector``'s deploy path on ``img [B, 3, H, W]`` (``img_shape [B, 2]``)."""
    detector = detector.eval()
    return count_macs(
        detector, lambda: detector.forward_deploy(img, img_shape), batch_size=img.shape[0]
    )
