"""MMDetection's ``YOLOAnchorGenerator``: explicit ``(w, h)`` anchor sizes per level."""

import torch

from ...errors import ConfigError
from ...registry import MODELS
from .anchor_generator import AnchorGenerator, as_pair


@MODELS.register_module()
class YOLOAnchorGenerator(AnchorGenerator):
    """Anchors of YOLOv3: the given sizes, centred at ``stride / 2`` of each cell.

    Args:
        strides: per level, an int or ``(stride_w, stride_h)``.
        base_sizes: per level, a list of ``(w, h)`` anchor sizes (the same count on every level).
    """

    def __init__(self, strides: list, base_sizes: list):
        self.strides = [as_pair(stride) for stride in strides]
        self.centers = [(stride[0] / 2.0, stride[1] / 2.0) for stride in self.strides]
        if len(base_sizes) != len(self.strides):
            raise ConfigError('YOLOAnchorGenerator: one list of base sizes per stride is needed')
        if len({len(level) for level in base_sizes}) != 1:
            raise ConfigError('YOLOAnchorGenerator: every level needs the same number of anchors')
        self.base_sizes = [[as_pair(size) for size in level] for level in base_sizes]
        self.center_offset = 0.0
        self.base_anchors = [
            self._level_base_anchors(sizes, center)
            for sizes, center in zip(self.base_sizes, self.centers)
        ]

    @staticmethod
    def _level_base_anchors(sizes: list, center: tuple) -> torch.Tensor:
        """``[len(sizes), 4]`` boxes of the given ``(w, h)`` around ``center``."""
        x_center, y_center = center
        return torch.tensor(
            [
                [x_center - 0.5 * w, y_center - 0.5 * h, x_center + 0.5 * w, y_center + 0.5 * h]
                for w, h in sizes
            ],
            dtype=torch.float32,
        )

    def __repr__(self) -> str:
        return f'{type(self).__name__}(strides={self.strides}, base_sizes={self.base_sizes})'
