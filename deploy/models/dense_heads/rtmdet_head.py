"""RTMDet's head (MMDetection's ``RTMDetSepBNHead``): per level, class and box towers of 3x3
ConvModules whose conv weights are shared across levels (BN per level), then 1x1 predictors.

Per level: ``cls_score [B, C, H, W]`` (logits) and ``bbox_pred [B, 4, H, W]``: distances
``(left, top, right, bottom)`` in input pixels, ``rtm_reg(x) * stride`` (``exp`` first with
``exp_on_reg``), unclamped, so a negative distance gives an inverted box that the clipping keeps
and the size filter drops. Priors are ``MlvlPointGenerator(offset=0)`` points: cell corners.

Post-processing is the shared dense one (:mod:`.base_dense_head`): per level the (prior, class)
pairs scoring above ``score_thr``, the best ``nms_pre``; decode and clip to the padded input
(MMDetection 3.x's ``img_shape`` after ``Pad``); boxes wider and taller than ``min_bbox_size``;
class-aware NMS; ``max_per_img``.
"""

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.multiclass_nms import multiclass_nms
from ...ops.topk_mask import top_k_mask
from ...registry import MODELS
from ...spec import DenseSettings
from ..layers import ConvModule
from .base_dense_head import BaseDenseHead


@MODELS.register_module()
class RTMDetSepBNHead(BaseDenseHead):
    """Children ``cls_convs.{level}.{i}``, ``reg_convs.{level}.{i}``, ``rtm_cls.{level}``,
    ``rtm_reg.{level}`` as in MMDetection (with ``share_conv`` the conv of every level is the
    level-0 module, so the state dict holds it under each level's name).

    Args:
        num_classes: object classes (sigmoid scores, no background).
        in_channels: channels of each input level.
        feat_channels: channels of the tower convs.
        stacked_convs: convs per tower.
        share_conv: share tower conv weights across levels.
        pred_kernel_size: kernel of the 1x1 (by default) predictors.
        exp_on_reg: ``exp`` of the box regression before the stride (the larger configs).
        with_objectness: only False (RTMDet's configs) is supported.
        use_depthwise: only False is supported.
        anchor_generator: the point generator (``MlvlPointGenerator``, offset 0, strides).
        bbox_coder: box coder config (``DistancePointBBoxCoder``).
        conv_cfg, norm_cfg, act_cfg: of the tower ConvModules.
        loss_*, train_cfg, reg_decoded_bbox: training only.
        test_cfg: post-processing settings.
    """

    raw_output_prefixes = ('cls_score', 'bbox_pred')

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        stacked_convs: int = 2,
        share_conv: bool = True,
        pred_kernel_size: int = 1,
        exp_on_reg: bool = False,
        with_objectness: bool = False,
        use_depthwise: bool = False,
        anchor_generator: dict | None = None,
        bbox_coder: dict | None = None,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        loss_cls: dict | None = None,
        loss_bbox: dict | None = None,
        loss_centerness: dict | None = None,
        reg_decoded_bbox: bool = True,
        train_cfg: dict | None = None,
        test_cfg: DenseSettings | dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        if with_objectness or use_depthwise:
            raise ConfigError(
                f'{type(self).__name__}: with_objectness and use_depthwise are not supported'
            )
        self.num_classes = num_classes
        self.cls_out_channels = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.exp_on_reg = exp_on_reg
        self.pred_kernel_size = pred_kernel_size
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg or dict(type='BN', momentum=0.03, eps=0.001)
        self.act_cfg = act_cfg or dict(type='SiLU')
        self.train_cfg = train_cfg
        self.loss_cls_cfg, self.loss_bbox_cfg = loss_cls, loss_bbox  # read by training only
        self.test_cfg = self.settings_from(test_cfg)
        generator = dict(
            anchor_generator or dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32])
        )
        if generator.get('type', 'MlvlPointGenerator').rsplit('.', 1)[-1] != 'MlvlPointGenerator':
            raise ConfigError(f'{type(self).__name__}: anchor_generator must be MlvlPointGenerator')
        self.prior_generator = MODELS.build(generator)
        self.strides = [s[0] for s in self.prior_generator.strides]
        self.bbox_coder = MODELS.build(bbox_coder or dict(type='DistancePointBBoxCoder'))
        self._init_layers(share_conv)

    def _tower(self) -> nn.ModuleList:
        return nn.ModuleList(
            ConvModule(
                self.in_channels if i == 0 else self.feat_channels,
                self.feat_channels,
                3,
                padding=1,
                conv_cfg=self.conv_cfg,
                norm_cfg=self.norm_cfg,
                act_cfg=self.act_cfg,
            )
            for i in range(self.stacked_convs)
        )

    def _predictor(self, out_channels: int) -> nn.Conv2d:
        k = self.pred_kernel_size
        return nn.Conv2d(self.feat_channels, out_channels, k, padding=k // 2)

    def _init_layers(self, share_conv: bool) -> None:
        levels = len(self.strides)
        self.cls_convs = nn.ModuleList(self._tower() for _ in range(levels))
        self.reg_convs = nn.ModuleList(self._tower() for _ in range(levels))
        self.rtm_cls = nn.ModuleList(self._predictor(self.num_classes) for _ in range(levels))
        self.rtm_reg = nn.ModuleList(self._predictor(4) for _ in range(levels))
        if share_conv:
            share_tower_convs(self.cls_convs)
            share_tower_convs(self.reg_convs)

    def forward_level(self, x: Tensor, level: int) -> tuple[Tensor, Tensor, Tensor]:
        """``cls_score``, ``bbox_pred`` (distances in pixels) and the class-tower feature."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs[level]:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs[level]:
            reg_feat = conv(reg_feat)
        reg = self.rtm_reg[level](reg_feat)
        reg = reg.exp() if self.exp_on_reg else reg
        return self.rtm_cls[level](cls_feat), reg * self.strides[level], cls_feat

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: ``cls_scores [B, C, H, W]`` and ``bbox_preds [B, 4, H, W]``."""
        outs = [self.forward_level(x, i) for i, x in enumerate(feats)]
        return [o[0] for o in outs], [o[1] for o in outs]

    def predict_by_feat_deploy(
        self, head_outputs: tuple, img_shape: Tensor, cfg: DenseSettings | None = None
    ) -> tuple[Tensor, Tensor]:
        """The eager selection with class-dense scores (:meth:`dense_candidates`), then
        :func:`multiclass_nms`.

        Returns:
            ``dets [B, K, 5]`` and ``labels [B, K]`` (K = ``max_per_img``; padding label -1).
        """
        cfg = self._cfg(cfg)
        boxes, scores = self.dense_candidates(head_outputs[0], head_outputs[1], img_shape, cfg)
        return multiclass_nms(
            boxes, scores, cfg.boxes_per_class, cfg.nms.iou_threshold, 0.0, cfg.max_per_img
        )

    def dense_candidates(
        self, cls_scores: list, bbox_preds: list, img_shape: Tensor, cfg: DenseSettings
    ) -> tuple[Tensor, Tensor]:
        """Every prior's box ``[B, N, 4]`` and class scores ``[B, N, C]``, zero where a pair is
        no candidate: per level at or below ``score_thr``, or outside the best ``nms_pre``
        (a mask, no ``TopK``: 30000 is beyond TensorRT's TopK limit), or its box is not wider
        and taller than ``min_bbox_size``, or (``deploy_nms_pre > 0``) outside the best
        ``deploy_nms_pre`` pairs of all levels."""
        first = cls_scores[0]
        sizes = [c.shape[-2:] for c in cls_scores]
        priors = self.get_priors(sizes, first.dtype, first.device)
        all_boxes, all_scores = [], []
        for cls_score, bbox_pred, level_priors in zip(cls_scores, bbox_preds, priors):
            scores, box_preds, _ = self.level_outputs(cls_score, bbox_pred)
            scores = torch.where(scores > cfg.score_thr, scores, 0.0)
            if cfg.nms_pre > 0:
                keep = top_k_mask(scores.reshape(scores.shape[0], -1), cfg.nms_pre)
                scores = torch.where(keep.reshape(scores.shape), scores, 0.0)
            all_boxes.append(self.decode(level_priors, box_preds, max_shape=img_shape))
            all_scores.append(scores)
        boxes, scores = torch.cat(all_boxes, 1), torch.cat(all_scores, 1)
        if cfg.min_bbox_size >= 0:
            wh = boxes[..., 2:] - boxes[..., :2]
            large = (wh[..., 0] > cfg.min_bbox_size) & (wh[..., 1] > cfg.min_bbox_size)
            scores = torch.where(large.unsqueeze(-1), scores, 0.0)
        if cfg.deploy_nms_pre > 0:  # the best pairs of all levels, as the other dense heads
            keep = top_k_mask(scores.reshape(scores.shape[0], -1), cfg.deploy_nms_pre)
            scores = torch.where(keep.reshape(scores.shape), scores, 0.0)
        return boxes, scores

    def level_outputs(self, cls_score: Tensor, bbox_pred: Tensor):
        scores = self.flatten_level(cls_score, self.num_classes).sigmoid()
        return scores, self.flatten_level(bbox_pred, 4), None


def share_tower_convs(towers: nn.ModuleList) -> None:
    """Make every level's tower convs the level-0 ones (their BN stays per level)."""
    for tower in towers[1:]:
        for module, first in zip(tower, towers[0]):
            module.conv = first.conv
