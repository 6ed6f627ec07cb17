"""A learnable scalar multiplier (MMCV's ``Scale``), used per level by FCOS-style heads."""

import torch
from torch import Tensor, nn

from ...registry import MODELS


@MODELS.register_module()
class Scale(nn.Module):
    """``x * scale`` with one scalar parameter named ``scale`` (shape ``[]``)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale
