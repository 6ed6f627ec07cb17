"""SSD's VGG backbone (MMDetection's ``SSDVGG`` on MMCV's ``VGG``), children ``features.{i}``.

``features`` is one ``nn.Sequential`` holding VGG's convs, ReLUs and max-pools (the convs at
indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28 for depth 16), then SSD's additions: a 3x3
stride-1 max-pool (30), ``fc6`` as a 3x3 conv with dilation 6 (31) and ``fc7`` as a 1x1 conv (33),
each conv followed by a ReLU. The outputs are the activations after the layers listed in
``out_feature_indices`` (SSD300: 22 = conv4_3 and 34 = fc7).
"""

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS


@MODELS.register_module()
class SSDVGG(nn.Module):
    """VGG without BN or classifier, as SSD uses it.

    Args:
        depth: 11, 13, 16 or 19.
        with_last_pool: keep the max-pool after the last VGG stage (SSD: False).
        ceil_mode: ceil mode of the stage max-pools (SSD: True).
        out_indices: MMCV ``VGG`` stage indices; unused by SSD (``out_feature_indices`` decides).
        out_feature_indices: ``features`` indices whose outputs are returned.
        base_channels: ours, not MMDetection's: channels of the first stage (64), doubling per
            stage up to ``8 * base_channels``, ``fc6``/``fc7`` ``16 * base_channels``. Other
            values only serve narrow test models.
        pretrained, init_cfg, input_size, l2_norm_scale: accepted and ignored (weights come from
            checkpoints; the last two are deprecated in MMDetection).
    """

    arch_settings = {
        11: (1, 1, 2, 2, 2),
        13: (2, 2, 2, 2, 2),
        16: (2, 2, 3, 3, 3),
        19: (2, 2, 4, 4, 4),
    }

    def __init__(
        self,
        depth: int,
        with_last_pool: bool = False,
        ceil_mode: bool = True,
        out_indices: tuple = (3, 4),
        out_feature_indices: tuple = (22, 34),
        base_channels: int = 64,
        pretrained: str | None = None,
        init_cfg: dict | list | None = None,
        input_size: int | None = None,
        l2_norm_scale: float | None = None,
    ):
        super().__init__()
        if depth not in self.arch_settings:
            raise ConfigError(
                f'invalid SSDVGG depth {depth}: use one of {sorted(self.arch_settings)}'
            )
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.out_feature_indices = tuple(out_feature_indices)
        layers: list[nn.Module] = []
        in_channels = 3
        stage_blocks = self.arch_settings[depth]
        for i, num_blocks in enumerate(stage_blocks):
            channels = base_channels * 2 ** min(i, 3)
            for _ in range(num_blocks):
                layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = channels
            if with_last_pool or i < len(stage_blocks) - 1:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
        fc_channels = base_channels * 16
        layers += [
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            nn.Conv2d(in_channels, fc_channels, kernel_size=3, padding=6, dilation=6),
            nn.ReLU(inplace=True),
            nn.Conv2d(fc_channels, fc_channels, kernel_size=1),
            nn.ReLU(inplace=True),
        ]
        if max(self.out_feature_indices) >= len(layers):
            raise ConfigError(
                f'SSDVGG out_feature_indices {self.out_feature_indices} exceed its {len(layers)} '
                'layers'
            )
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, ...] | Tensor:
        """``[B, 3, H, W]`` -> the ``out_feature_indices`` activations (a tensor if only one)."""
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.out_feature_indices:
                outs.append(x)
        return outs[0] if len(outs) == 1 else tuple(outs)
