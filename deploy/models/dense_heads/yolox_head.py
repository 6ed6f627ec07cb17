"""YOLOX head (MMDetection's ``YOLOXHead``): decoupled class and box towers per level,
objectness on the box tower.

Post-processing (MMDetection 3.3.0 ``YOLOXHead.predict_by_feat``): priors are the top-left
corners of the cells (``MlvlPointGenerator(strides, offset=0)``, with strides); boxes are
``centre = d_xy * s + prior``, ``size = exp(d_wh) * s``, never clipped; each prior has one label,
its best class, and the score ``max_c sigmoid(cls) * sigmoid(objectness)``; priors with a score
at or above ``score_thr`` go to per-class NMS, and every survivor is returned (up to
``max_per_img`` here: see :class:`~deploy.spec.YOLOXSettings`).
"""

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ...spec import YOLOXSettings
from ..layers import ConvModule
from .base_dense_head import BaseDenseHead


@MODELS.register_module()
class YOLOXHead(BaseDenseHead):
    """Children ``multi_level_cls_convs``, ``multi_level_reg_convs``, ``multi_level_conv_cls``,
    ``multi_level_conv_reg`` and ``multi_level_conv_obj`` (one entry per level, nothing shared).

    Args:
        num_classes: number of object classes.
        in_channels: channels of every input level.
        feat_channels: channels of the tower convs.
        stacked_convs: 3x3 ConvModules per tower.
        strides: stride of each level.
        use_depthwise, dcn_on_last_conv: only False is supported.
        conv_bias: bias of the tower convs (``'auto'``: only without norm).
        conv_cfg, norm_cfg, act_cfg: of the tower convs (BN eps 1e-3, Swish by default).
        loss_*, train_cfg, init_cfg: training only.
        test_cfg: MMDetection's dict (``score_thr``, ``nms``).
    """

    raw_output_prefixes = ('cls_score', 'bbox_pred', 'objectness')
    settings_type = YOLOXSettings
    threshold_on_output_score = True  # score_thr acts on cls * objectness, the output score

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        stacked_convs: int = 2,
        strides: tuple = (8, 16, 32),
        use_depthwise: bool = False,
        dcn_on_last_conv: bool = False,
        conv_bias: bool | str = 'auto',
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        loss_cls: dict | None = None,
        loss_bbox: dict | None = None,
        loss_obj: dict | None = None,
        loss_l1: dict | None = None,
        train_cfg: dict | None = None,
        test_cfg: YOLOXSettings | dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        if use_depthwise or dcn_on_last_conv:
            raise ConfigError('YOLOXHead: use_depthwise and dcn_on_last_conv are not supported')
        self.num_classes = num_classes
        self.cls_out_channels = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.strides = list(strides)
        self.conv_bias = conv_bias
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg or dict(type='BN', momentum=0.03, eps=0.001)
        self.act_cfg = act_cfg or dict(type='Swish')
        self.train_cfg = train_cfg
        self.test_cfg = self.settings_from(test_cfg)
        self.prior_generator = MODELS.build(
            dict(type='MlvlPointGenerator', strides=self.strides, offset=0)
        )
        self.multi_level_cls_convs = nn.ModuleList(self._tower() for _ in self.strides)
        self.multi_level_reg_convs = nn.ModuleList(self._tower() for _ in self.strides)
        self.multi_level_conv_cls = nn.ModuleList(
            nn.Conv2d(feat_channels, num_classes, 1) for _ in self.strides
        )
        self.multi_level_conv_reg = nn.ModuleList(
            nn.Conv2d(feat_channels, 4, 1) for _ in self.strides
        )
        self.multi_level_conv_obj = nn.ModuleList(
            nn.Conv2d(feat_channels, 1, 1) for _ in self.strides
        )

    def _tower(self) -> nn.Sequential:
        return nn.Sequential(
            *(
                ConvModule(
                    self.in_channels if i == 0 else self.feat_channels,
                    self.feat_channels,
                    3,
                    padding=1,
                    bias=self.conv_bias,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg,
                    act_cfg=self.act_cfg,
                )
                for i in range(self.stacked_convs)
            )
        )

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], ...]:
        """Per level: ``cls_scores [B, C, H, W]``, ``bbox_preds [B, 4, H, W]`` (deltas) and
        ``objectnesses [B, 1, H, W]`` (logits)."""
        if len(feats) != len(self.strides):
            raise ValueError(f'YOLOXHead expects {len(self.strides)} levels, got {len(feats)}')
        cls_scores, bbox_preds, objectnesses = [], [], []
        for i, x in enumerate(feats):
            cls_feat = self.multi_level_cls_convs[i](x)
            reg_feat = self.multi_level_reg_convs[i](x)
            cls_scores.append(self.multi_level_conv_cls[i](cls_feat))
            bbox_preds.append(self.multi_level_conv_reg[i](reg_feat))
            objectnesses.append(self.multi_level_conv_obj[i](reg_feat))
        return cls_scores, bbox_preds, objectnesses

    def get_priors(self, featmap_sizes: list, dtype: torch.dtype, device: torch.device):
        """Per level ``[N_l, 4]``: ``(x, y, stride_w, stride_h)``, x and y the cell's corner."""
        return self.prior_generator.grid_priors(featmap_sizes, dtype, device, with_stride=True)

    def level_outputs(self, cls_score: Tensor, bbox_pred: Tensor, objectness: Tensor):
        return (
            self.flatten_level(cls_score, self.num_classes).sigmoid(),
            self.flatten_level(bbox_pred, 4),
            self.flatten_level(objectness, 1).squeeze(-1).sigmoid(),
        )

    def decode(self, priors: Tensor, box_preds: Tensor, max_shape=None) -> Tensor:
        """``(dx, dy, dw, dh)`` -> ``x1, y1, x2, y2``; not clipped (``max_shape`` is ignored)."""
        centres = box_preds[..., :2] * priors[..., 2:] + priors[..., :2]
        half = box_preds[..., 2:].exp() * priors[..., 2:] / 2
        return torch.cat([centres - half, centres + half], dim=-1)

    def _flat_outputs(self, head_outputs: tuple, cfg: YOLOXSettings) -> tuple[Tensor, ...]:
        """All levels at once: ``scores [B, N]``, ``labels [B, N]``, boxes ``[B, N, 4]`` and a
        mask ``[B, N]`` of the candidates (score at or above ``score_thr``)."""
        levels = self._levels(head_outputs)
        first = levels[0][0]
        priors = self.get_priors([lvl[0].shape[-2:] for lvl in levels], first.dtype, first.device)
        outputs = [self.level_outputs(*lvl) for lvl in levels]
        cls_scores, box_preds, objectness = (torch.cat(parts, 1) for parts in zip(*outputs))
        best, labels = cls_scores.max(-1)
        scores = best * objectness
        boxes = self.decode(torch.cat(priors, 0), box_preds)
        return scores, labels, boxes, scores >= cfg.score_thr

    def predict_by_feat(
        self, head_outputs: tuple, img_metas: list[dict], cfg: YOLOXSettings | None = None
    ) -> list[dict]:
        """Eager detections per image (network-input pixels), by decreasing score."""
        cfg = self._cfg(cfg)
        scores, labels, boxes, keep = self._flat_outputs(head_outputs, cfg)
        return [
            self._nms_single(boxes[i][keep[i]], scores[i][keep[i]], labels[i][keep[i]], cfg)
            for i in range(scores.shape[0])
        ]

    def predict_by_feat_deploy(
        self, head_outputs: tuple, img_shape: Tensor, cfg: YOLOXSettings | None = None
    ) -> tuple[Tensor, Tensor]:
        """Batched, traceable: non-candidates get score 0 (never selected), then ONNX NMS."""
        cfg = self._cfg(cfg)
        scores, labels, boxes, keep = self._flat_outputs(head_outputs, cfg)
        return self.nms_deploy(boxes, torch.where(keep, scores, 0.0), labels, cfg)
