"""Global average pooling (MMClassification / MMPretrain ``GlobalAveragePooling`` neck)."""

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS


@MODELS.register_module()
class GlobalAveragePooling(nn.Module):
    """Average each feature map over its spatial dims: ``[B, C, *spatial]`` -> ``[B, C]``.

    Args:
        dim: spatial dims of the input (1, 2 or 3; classifiers use 2).

    Takes one tensor or a tuple of them (a backbone's outputs) and returns the same structure.
    The result is flattened with ``view(B, -1)`` rather than ``squeeze`` so a batch of 1 keeps its
    batch dim, as in MMPretrain.
    """

    def __init__(self, dim: int = 2):
        super().__init__()
        if dim not in (1, 2, 3):
            raise ConfigError(f'GlobalAveragePooling dim must be 1, 2 or 3, got {dim}')
        pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[dim]
        self.gap = pool(1)

    def _pool(self, x: Tensor) -> Tensor:
        return self.gap(x).view(x.size(0), -1)

    def forward(self, inputs: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        if isinstance(inputs, tuple):
            return tuple(self._pool(x) for x in inputs)
        if isinstance(inputs, Tensor):
            return self._pool(inputs)
        raise TypeError(f'GlobalAveragePooling takes a tensor or a tuple, got {type(inputs)}')
