"""FCOS head (MMDetection's ``FCOSHead``): GN towers, per-level ``Scale``, centerness.

Per level: ``cls_score [B, C, H, W]``, ``bbox_pred [B, 4, H, W]`` (left, top, right, bottom
distances in pixels: ``exp(scale * x)``, or ``relu(scale * x) * stride`` with ``norm_on_bbox``)
and ``centerness [B, 1, H, W]``. The sigmoid of the centerness multiplies the class scores after
the score threshold (the base head's score factors), as in MMDetection.
"""

from torch import Tensor, nn

from ...registry import MODELS
from ..layers import Scale
from .anchor_free_head import AnchorFreeHead

INF = 1e8


@MODELS.register_module()
class FCOSHead(AnchorFreeHead):
    """Children as in MMDetection: the :class:`AnchorFreeHead` ones plus ``conv_centerness`` and
    ``scales.{i}.scale``.

    Args:
        regress_ranges, center_sampling, center_sample_radius, loss_centerness: training only.
        norm_on_bbox: regress ``relu(x) * stride`` instead of ``exp(x)``.
        centerness_on_reg: compute centerness from the box tower instead of the class tower.
        norm_cfg: tower norm (default GN with 32 groups).
        Other args: see :class:`AnchorFreeHead`.
    """

    raw_output_prefixes = ('cls_score', 'bbox_pred', 'centerness')

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        regress_ranges: tuple = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF)),
        center_sampling: bool = False,
        center_sample_radius: float = 1.5,
        norm_on_bbox: bool = False,
        centerness_on_reg: bool = False,
        loss_centerness: dict | None = None,
        norm_cfg: dict | None = None,
        **kwargs,
    ):
        self.regress_ranges = regress_ranges
        self.center_sampling = center_sampling
        self.center_sample_radius = center_sample_radius
        self.norm_on_bbox = norm_on_bbox
        self.centerness_on_reg = centerness_on_reg
        self.loss_centerness_cfg = loss_centerness or dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0
        )
        norm_cfg = norm_cfg or dict(type='GN', num_groups=32, requires_grad=True)
        super().__init__(num_classes, in_channels, norm_cfg=norm_cfg, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        self.conv_centerness = nn.Conv2d(self.feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], ...]:
        """Per level: ``cls_scores``, ``bbox_preds`` (distances) and ``centernesses`` (logits)."""
        outs = [
            self._forward_level(x, scale, stride)
            for x, scale, stride in zip(feats, self.scales, self.strides)
        ]
        return tuple([o[i] for o in outs] for i in range(3))

    def _forward_level(self, x: Tensor, scale: Scale, stride: int) -> tuple[Tensor, ...]:
        cls_score, bbox_pred, cls_feat, reg_feat = self.forward_single(x)
        centerness = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
        bbox_pred = scale(bbox_pred).float()
        if self.norm_on_bbox:
            bbox_pred = bbox_pred.clamp(min=0)
            if not self.training:
                bbox_pred = bbox_pred * stride
        else:
            bbox_pred = bbox_pred.exp()
        return cls_score, bbox_pred, centerness

    threshold_on_output_score = False  # thresholded before centerness

    def level_outputs(self, cls_score: Tensor, bbox_pred: Tensor, centerness: Tensor):
        scores, box_preds, _ = super().level_outputs(cls_score, bbox_pred)
        return scores, box_preds, self.flatten_level(centerness, 1).squeeze(-1).sigmoid()
