"""Anchor-based dense head (MMDetection's ``AnchorHead``): 1x1 convs for classes and boxes."""

from torch import Tensor, nn

from ...registry import MODELS
from ...spec import DenseSettings
from .base_dense_head import BaseDenseHead


@MODELS.register_module()
class AnchorHead(BaseDenseHead):
    """Anchor head with MMDetection's config keys and child names (``conv_cls``, ``conv_reg``).

    Args:
        num_classes: number of object classes (no background).
        in_channels: channels of each input feature map.
        feat_channels: channels of hidden convs (used by subclasses).
        anchor_generator, bbox_coder: registry configs.
        loss_cls: its ``use_sigmoid`` decides sigmoid (C outputs) or softmax (C + 1, background
            last); the losses themselves are only used in training.
        train_cfg, test_cfg: MMDetection's dicts; ``test_cfg`` drives post-processing.
    """

    #: names of the per-level tensors that :meth:`forward` returns (raw outputs)
    raw_output_prefixes = ('cls_score', 'bbox_pred')

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        anchor_generator: dict | None = None,
        bbox_coder: dict | None = None,
        reg_decoded_bbox: bool = False,
        loss_cls: dict | None = None,
        loss_bbox: dict | None = None,
        train_cfg: dict | None = None,
        test_cfg: DenseSettings | dict | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        anchor_generator = anchor_generator or dict(
            type='AnchorGenerator',
            scales=[8, 16, 32],
            ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64],
        )
        bbox_coder = bbox_coder or dict(
            type='DeltaXYWHBBoxCoder',
            clip_border=True,
            target_means=(0.0, 0.0, 0.0, 0.0),
            target_stds=(1.0, 1.0, 1.0, 1.0),
        )
        self.loss_cls_cfg = loss_cls or dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0
        )
        self.loss_bbox_cfg = loss_bbox or dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.use_sigmoid_cls = self.loss_cls_cfg.get('use_sigmoid', False)
        self.cls_out_channels = num_classes if self.use_sigmoid_cls else num_classes + 1
        self.reg_decoded_bbox = reg_decoded_bbox
        self.train_cfg = train_cfg
        self.test_cfg = self.settings_from(test_cfg)
        self.prior_generator = MODELS.build(anchor_generator)
        self.bbox_coder = MODELS.build(bbox_coder)
        self.num_base_priors = self.prior_generator.num_base_priors[0]
        self._init_layers()

    def _init_layers(self) -> None:
        self.conv_cls = nn.Conv2d(self.in_channels, self.num_base_priors * self.cls_out_channels, 1)
        self.conv_reg = nn.Conv2d(self.in_channels, self.num_base_priors * 4, 1)

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.conv_cls(x), self.conv_reg(x)

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: ``cls_scores [B, A*C, H, W]`` and ``bbox_preds [B, A*4, H, W]``."""
        outs = [self.forward_single(x) for x in feats]
        return [o[0] for o in outs], [o[1] for o in outs]

    def level_outputs(self, cls_score: Tensor, bbox_pred: Tensor):
        logits = self.flatten_level(cls_score, self.cls_out_channels)
        # Softmax heads put background last and never predict it.
        scores = logits.sigmoid() if self.use_sigmoid_cls else logits.softmax(-1)[..., :-1]
        return scores, self.flatten_level(bbox_pred, 4), None
