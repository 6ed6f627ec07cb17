"""YOLOv3 head (MMDetection's ``YOLOV3Head``): a 3x3 bridge ConvModule and a 1x1 prediction conv
per level; each anchor predicts ``(x, y, w, h, objectness, classes...)``.

Post-processing (MMDetection 3.x ``YOLOV3Head.predict_by_feat``, through the shared base head):
priors with ``sigmoid(objectness) < conf_thr`` are dropped; (prior, class) pairs with
``sigmoid(class) > score_thr`` are kept, the best ``nms_pre`` over all levels at once
(``select_across_levels``); their score is multiplied by the objectness (the score factor);
boxes are decoded by :class:`~deploy.models.task_utils.YOLOBBoxCoder` and never clipped.
"""

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ...spec import DenseSettings
from ..layers import ConvModule
from .base_dense_head import BaseDenseHead


@MODELS.register_module()
class YOLOV3Head(BaseDenseHead):
    """Children ``convs_bridge.{i}`` and ``convs_pred.{i}`` as in MMDetection.

    Args:
        num_classes: number of object classes.
        in_channels: channels of each input level (from the neck, coarsest first).
        out_channels: channels of each bridge conv.
        anchor_generator, bbox_coder: registry configs (YOLO anchors and coder by default).
        featmap_strides: stride of each level.
        one_hot_smoother, loss_*: training only.
        conv_cfg, norm_cfg, act_cfg: of the bridge convs (BN + LeakyReLU(0.1) by default).
        train_cfg, test_cfg: MMDetection's dicts; ``test_cfg`` may hold ``conf_thr``.
    """

    raw_output_prefixes = ('pred_map',)
    select_across_levels = True

    def __init__(
        self,
        num_classes: int,
        in_channels: list[int],
        out_channels: list[int] = (1024, 512, 256),
        anchor_generator: dict | None = None,
        bbox_coder: dict | None = None,
        featmap_strides: list[int] = (32, 16, 8),
        one_hot_smoother: float = 0.0,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        loss_cls: dict | None = None,
        loss_conf: dict | None = None,
        loss_xy: dict | None = None,
        loss_wh: dict | None = None,
        train_cfg: dict | None = None,
        test_cfg: DenseSettings | dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        if not len(in_channels) == len(out_channels) == len(featmap_strides):
            raise ConfigError(
                'YOLOV3Head: in_channels, out_channels and featmap_strides need one entry per level'
            )
        anchor_generator = anchor_generator or dict(
            type='YOLOAnchorGenerator',
            base_sizes=[
                [(116, 90), (156, 198), (373, 326)],
                [(30, 61), (62, 45), (59, 119)],
                [(10, 13), (16, 30), (33, 23)],
            ],
            strides=[32, 16, 8],
        )
        self.num_classes = num_classes
        self.in_channels = list(in_channels)
        self.out_channels = list(out_channels)
        self.featmap_strides = list(featmap_strides)
        self.one_hot_smoother = one_hot_smoother
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg or dict(type='BN', requires_grad=True)
        self.act_cfg = act_cfg or dict(type='LeakyReLU', negative_slope=0.1)
        self.losses_cfg = dict(
            loss_cls=loss_cls, loss_conf=loss_conf, loss_xy=loss_xy, loss_wh=loss_wh
        )
        self.train_cfg = train_cfg
        self.test_cfg = self.settings_from(test_cfg)
        self.bbox_coder = MODELS.build(bbox_coder or dict(type='YOLOBBoxCoder'))
        self.prior_generator = MODELS.build(anchor_generator)
        if len(self.prior_generator.num_base_priors) != len(self.featmap_strides):
            raise ConfigError('YOLOV3Head: the anchor generator needs one level per featmap stride')
        self.num_base_priors = self.prior_generator.num_base_priors[0]
        self._init_layers()

    @property
    def num_levels(self) -> int:
        return len(self.featmap_strides)

    @property
    def num_attrib(self) -> int:
        """Attributes per anchor: box (4) + objectness (1) + classes."""
        return 5 + self.num_classes

    def _init_layers(self) -> None:
        self.convs_bridge = nn.ModuleList()
        self.convs_pred = nn.ModuleList()
        for in_channels, out_channels in zip(self.in_channels, self.out_channels):
            self.convs_bridge.append(
                ConvModule(
                    in_channels,
                    out_channels,
                    3,
                    padding=1,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg,
                    act_cfg=self.act_cfg,
                )
            )
            self.convs_pred.append(
                nn.Conv2d(out_channels, self.num_base_priors * self.num_attrib, 1)
            )

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor]]:
        """Per level: ``pred_maps [B, A*(5+C), H, W]`` (one group, as MMDetection returns)."""
        if len(feats) != self.num_levels:
            raise ValueError(f'YOLOV3Head expects {self.num_levels} levels, got {len(feats)}')
        return (
            [pred(bridge(x)) for x, bridge, pred in zip(feats, self.convs_bridge, self.convs_pred)],
        )

    def get_priors(self, featmap_sizes: list, dtype: torch.dtype, device: torch.device):
        """Per level ``[N_l, 5]``: anchors ``x1, y1, x2, y2`` and the level's stride, which the
        coder needs and which must travel with each anchor once levels are merged."""
        anchors = self.prior_generator.grid_priors(featmap_sizes, dtype=dtype, device=device)
        return [
            torch.cat([level, torch.ones_like(level[:, :1]) * stride], dim=1)
            for level, stride in zip(anchors, self.featmap_strides)
        ]

    threshold_on_output_score = False  # thresholded before objectness

    def level_outputs(self, pred_map: Tensor):
        pred = self.flatten_level(pred_map, self.num_attrib)
        box_preds = torch.cat([pred[..., :2].sigmoid(), pred[..., 2:4]], dim=-1)
        return pred[..., 5:].sigmoid(), box_preds, pred[..., 4].sigmoid()

    def decode(self, priors: Tensor, box_preds: Tensor, max_shape=None) -> Tensor:
        """YOLO boxes are not clipped: ``max_shape`` is ignored, as in MMDetection."""
        return self.bbox_coder.decode(priors[..., :4], box_preds, priors[..., 4:5])
