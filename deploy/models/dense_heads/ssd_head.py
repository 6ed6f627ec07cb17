"""SSD head (MMDetection's ``SSDHead``): one 3x3 class conv and one 3x3 box conv per level.

Classification is a softmax over ``num_classes + 1`` channels per anchor with the background
last; :meth:`AnchorHead.level_outputs` drops that column. Levels have different anchor counts
(4 or 6 for SSD300), so ``num_base_priors`` is a list here.
"""

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ...spec import DenseSettings
from ..layers import ConvModule
from .anchor_head import AnchorHead
from .base_dense_head import BaseDenseHead


@MODELS.register_module()
class SSDHead(AnchorHead):
    """Children ``cls_convs.{level}.{i}`` and ``reg_convs.{level}.{i}`` (each level is a
    ``Sequential`` ending in the predictor conv), as in MMDetection >= 2.14.

    Args:
        num_classes: number of object classes (the background channel is added).
        in_channels: channels of each level.
        stacked_convs, feat_channels, conv_cfg, norm_cfg, act_cfg: an optional ConvModule tower
            before each predictor (none in SSD300).
        use_depthwise: SSD-Lite predictors; not supported.
        anchor_generator, bbox_coder: registry configs.
        reg_decoded_bbox, train_cfg, test_cfg, init_cfg: as in :class:`AnchorHead`.
    """

    def __init__(
        self,
        num_classes: int = 80,
        in_channels: tuple = (512, 1024, 512, 256, 256, 256),
        stacked_convs: int = 0,
        feat_channels: int = 256,
        use_depthwise: bool = False,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        anchor_generator: dict | None = None,
        bbox_coder: dict | None = None,
        reg_decoded_bbox: bool = False,
        train_cfg: dict | None = None,
        test_cfg: DenseSettings | dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        # Not AnchorHead.__init__: SSD has per-level channels and anchor counts, and always softmax.
        BaseDenseHead.__init__(self)
        if use_depthwise:
            raise ConfigError('SSDHead: use_depthwise (SSD-Lite) is not supported')
        anchor_generator = anchor_generator or dict(
            type='SSDAnchorGenerator',
            scale_major=False,
            input_size=300,
            strides=[8, 16, 32, 64, 100, 300],
            ratios=([2], [2, 3], [2, 3], [2, 3], [2], [2]),
            basesize_ratio_range=(0.1, 0.9),
        )
        bbox_coder = bbox_coder or dict(
            type='DeltaXYWHBBoxCoder',
            clip_border=True,
            target_means=[0.0, 0.0, 0.0, 0.0],
            target_stds=[1.0, 1.0, 1.0, 1.0],
        )
        self.num_classes = num_classes
        self.in_channels = list(in_channels)
        self.stacked_convs = stacked_convs
        self.feat_channels = feat_channels
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self.use_sigmoid_cls = False
        self.cls_out_channels = num_classes + 1
        self.reg_decoded_bbox = reg_decoded_bbox
        self.train_cfg = train_cfg
        self.test_cfg = self.settings_from(test_cfg)
        self.prior_generator = MODELS.build(anchor_generator)
        self.bbox_coder = MODELS.build(bbox_coder)
        self.num_base_priors = self.prior_generator.num_base_priors
        if len(self.num_base_priors) != len(self.in_channels):
            raise ConfigError(
                f'SSDHead: {len(self.in_channels)} input levels but the anchor generator has '
                f'{len(self.num_base_priors)}'
            )
        self._init_layers()

    def _init_layers(self) -> None:
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for channels, num_priors in zip(self.in_channels, self.num_base_priors):
            cls_layers: list[nn.Module] = []
            reg_layers: list[nn.Module] = []
            in_channels = channels
            for _ in range(self.stacked_convs):
                for layers in (cls_layers, reg_layers):
                    layers.append(
                        ConvModule(
                            in_channels,
                            self.feat_channels,
                            3,
                            padding=1,
                            conv_cfg=self.conv_cfg,
                            norm_cfg=self.norm_cfg,
                            act_cfg=self.act_cfg,
                        )
                    )
                in_channels = self.feat_channels
            cls_layers.append(
                nn.Conv2d(in_channels, num_priors * self.cls_out_channels, 3, padding=1)
            )
            reg_layers.append(nn.Conv2d(in_channels, num_priors * 4, 3, padding=1))
            self.cls_convs.append(nn.Sequential(*cls_layers))
            self.reg_convs.append(nn.Sequential(*reg_layers))

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: ``cls_scores [B, A_l*(C+1), H, W]`` and ``bbox_preds [B, A_l*4, H, W]``."""
        cls_scores = [conv(x) for x, conv in zip(feats, self.cls_convs)]
        bbox_preds = [conv(x) for x, conv in zip(feats, self.reg_convs)]
        return cls_scores, bbox_preds
