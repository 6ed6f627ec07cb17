"""RetinaNet head: two towers of 3x3 convs, then class and box convs (MMDetection's RetinaHead)."""

from torch import Tensor, nn

from ...registry import MODELS
from ..layers import ConvModule
from .anchor_head import AnchorHead


@MODELS.register_module()
class RetinaHead(AnchorHead):
    """Children ``cls_convs.{i}``, ``reg_convs.{i}``, ``retina_cls``, ``retina_reg`` (MMDetection).

    Args:
        stacked_convs: convs per tower.
        conv_cfg, norm_cfg: for the tower convs (RetinaNet uses neither: convs have a bias).
        Other args: see :class:`AnchorHead`; the default anchors are RetinaNet's.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        stacked_convs: int = 4,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        anchor_generator: dict | None = None,
        **kwargs,
    ):
        self.stacked_convs = stacked_convs
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        anchor_generator = anchor_generator or dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128],
        )
        super().__init__(num_classes, in_channels, anchor_generator=anchor_generator, **kwargs)

    def _init_layers(self) -> None:
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(self.stacked_convs):
            channels = self.in_channels if i == 0 else self.feat_channels
            for tower in (self.cls_convs, self.reg_convs):
                tower.append(
                    ConvModule(
                        channels,
                        self.feat_channels,
                        3,
                        stride=1,
                        padding=1,
                        conv_cfg=self.conv_cfg,
                        norm_cfg=self.norm_cfg,
                    )
                )
        self.retina_cls = nn.Conv2d(
            self.feat_channels, self.num_base_priors * self.cls_out_channels, 3, padding=1
        )
        self.retina_reg = nn.Conv2d(self.feat_channels, self.num_base_priors * 4, 3, padding=1)

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)
