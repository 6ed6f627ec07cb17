"""MMDetection's ``SSDAnchorGenerator``: per-level anchor sizes from the input size, SSD ordering.

Anchor sizes: unless ``min_sizes``/``max_sizes`` are given, they follow from ``input_size`` and
``basesize_ratio_range`` with MMDetection's integer arithmetic (SSD300 on COCO: min sizes
``[21, 45, 99, 153, 207, 261]``, max sizes ``[45, 99, 153, 207, 261, 315]``). A level with ratios
``[r1, r2]`` has ratios ``[1, 1/r1, r1, 1/r2, r2]`` and scales ``[1, sqrt(max / min)]``; only
(scale 1, every ratio) and (scale ``sqrt(max / min)``, ratio 1) are kept, the latter moved to
second place: 4 anchors per location for ``[2]``, 6 for ``[2, 3]``. Anchors are centred at
``stride / 2`` of each cell.
"""

import numpy as np
import torch

from ...errors import ConfigError
from ...registry import MODELS
from .anchor_generator import AnchorGenerator, as_pair

# input_size -> {basesize_ratio_range[0]: (min, max) percent of the extra first level}
_FIRST_LEVEL = {
    300: {0.15: (7, 15), 0.2: (10, 20)},  # COCO, VOC
    512: {0.1: (4, 10), 0.15: (7, 15)},  # COCO, VOC
}


@MODELS.register_module()
class SSDAnchorGenerator(AnchorGenerator):
    """Anchors of SSD (MMDetection 2.x/3.x semantics, keys as in its configs).

    Args:
        strides: per level, an int or ``(stride_w, stride_h)``.
        ratios: per level, the ratios besides 1 (each adds ``1/r`` and ``r``).
        min_sizes, max_sizes: per-level anchor sizes; give both or neither.
        basesize_ratio_range: ``(min, max)`` sizes as fractions of ``input_size`` when the sizes
            are not given.
        input_size: 300 or 512 when the sizes are not given.
        scale_major: order of the generated base anchors before SSD's selection (configs use
            False).
    """

    def __init__(
        self,
        strides: list,
        ratios: list,
        min_sizes: list | None = None,
        max_sizes: list | None = None,
        basesize_ratio_range: tuple = (0.15, 0.9),
        input_size: int = 300,
        scale_major: bool = True,
    ):
        if len(strides) != len(ratios):
            raise ConfigError('SSDAnchorGenerator: one ratio list per stride is needed')
        if (min_sizes is None) != (max_sizes is None):
            raise ConfigError('SSDAnchorGenerator: give both min_sizes and max_sizes, or neither')
        self.strides = [as_pair(stride) for stride in strides]
        self.centers = [(stride[0] / 2.0, stride[1] / 2.0) for stride in self.strides]
        self.input_size = input_size
        self.basesize_ratio_range = tuple(basesize_ratio_range)
        if min_sizes is None:
            min_sizes, max_sizes = self._sizes_from_ratio_range()
        if not len(min_sizes) == len(max_sizes) == len(self.strides):
            raise ConfigError(
                f'SSDAnchorGenerator: {len(self.strides)} levels but {len(min_sizes)} sizes'
            )
        self.scales, self.ratios = [], []
        for level_ratios, min_size, max_size in zip(ratios, min_sizes, max_sizes):
            anchor_ratios = [1.0]
            for r in level_ratios:
                anchor_ratios += [1 / r, r]
            # float32 tensors built from float64 values, as MMDetection does (bit-exact anchors)
            self.ratios.append(torch.tensor(anchor_ratios, dtype=torch.float32))
            self.scales.append(
                torch.tensor([1.0, np.sqrt(max_size / min_size)], dtype=torch.float32)
            )
        self.base_sizes = list(min_sizes)
        self.scale_major = scale_major
        self.center_offset = 0.0
        self.octave_base_scale = None
        self.scales_per_octave = None
        self.base_anchors = [
            self._select_ssd_anchors(
                self.gen_single_level_base_anchors(
                    size, self.scales[i], self.ratios[i], self.centers[i]
                ),
                len(self.ratios[i]),
            )
            for i, size in enumerate(self.base_sizes)
        ]

    def _sizes_from_ratio_range(self) -> tuple[list[int], list[int]]:
        """MMDetection's hard-coded SSD300/SSD512 anchor sizes (integer percent arithmetic)."""
        first = _FIRST_LEVEL.get(self.input_size, {}).get(self.basesize_ratio_range[0])
        if first is None:
            raise ConfigError(
                'SSDAnchorGenerator without min_sizes/max_sizes supports input_size 300 '
                '(basesize_ratio_range starting 0.15 or 0.2) and 512 (0.1 or 0.15), got '
                f'{self.input_size} and {self.basesize_ratio_range}'
            )
        min_ratio, max_ratio = (int(r * 100) for r in self.basesize_ratio_range)
        step = int(np.floor(max_ratio - min_ratio) / (len(self.strides) - 2))
        min_sizes, max_sizes = [], []
        for ratio in range(min_ratio, max_ratio + 1, step):
            min_sizes.append(int(self.input_size * ratio / 100))
            max_sizes.append(int(self.input_size * (ratio + step) / 100))
        min_sizes.insert(0, int(self.input_size * first[0] / 100))
        max_sizes.insert(0, int(self.input_size * first[1] / 100))
        return min_sizes, max_sizes

    @staticmethod
    def _select_ssd_anchors(base_anchors, num_ratios: int):
        """Keep (scale 1, every ratio) and (scale 2, ratio 1), the latter second."""
        indices = list(range(num_ratios))
        indices.insert(1, num_ratios)
        return base_anchors[torch.tensor(indices, dtype=torch.long)]

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(strides={self.strides}, base_sizes={self.base_sizes}, '
            f'ratios={[r.tolist() for r in self.ratios]}, '
            f'scales={[s.tolist() for s in self.scales]}, scale_major={self.scale_major})'
        )
