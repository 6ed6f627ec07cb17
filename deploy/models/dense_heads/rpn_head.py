"""Region Proposal Network head (MMDetection's ``RPNHead``): class-agnostic proposals per image.

What differs from a detection head (:class:`AnchorHead`):

* one foreground score per anchor (sigmoid, or the first of a 2-way softmax);
* per level, the top ``nms_pre`` anchors by score (no score threshold);
* proposals not wider and taller than ``min_bbox_size`` are dropped;
* NMS runs **per level**: MMDetection's ``batched_nms`` with the level index as the class, so
  proposals of different levels never suppress each other; then the best ``max_per_img``.

The deploy path writes the same selection with fixed shapes: the level index plays the role of the
class in one :func:`multiclass_nms` op, which returns ``max_per_img`` padded rows (label -1).
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...ops.multiclass_nms import multiclass_nms
from ...registry import MODELS
from ...spec import RpnSettings
from ..layers import ConvModule
from .anchor_head import AnchorHead


@MODELS.register_module()
class RPNHead(AnchorHead):
    """Children ``rpn_conv``, ``rpn_cls``, ``rpn_reg`` as in MMDetection.

    Args:
        in_channels: channels of each FPN level.
        num_convs: 3x3 convs before the predictors (1: a plain ``Conv2d`` as in all the zoo's
            configs; more: a ``Sequential`` of ``ConvModule``).
        num_classes: always 1 (accepted for 3.x configs that spell it out).
        Other args: see :class:`AnchorHead`; ``test_cfg`` is the config's ``test_cfg.rpn``.
    """

    raw_output_prefixes = ('rpn_cls_score', 'rpn_bbox_pred')
    settings_type = RpnSettings

    def __init__(self, in_channels: int, num_convs: int = 1, num_classes: int = 1, **kwargs):
        self.num_convs = num_convs
        kwargs.setdefault(
            'anchor_generator',
            dict(
                type='AnchorGenerator',
                scales=[8],
                ratios=[0.5, 1.0, 2.0],
                strides=[4, 8, 16, 32, 64],
            ),
        )
        super().__init__(1, in_channels, **kwargs)

    def _init_layers(self) -> None:
        if self.num_convs > 1:
            self.rpn_conv = nn.Sequential(
                *[
                    ConvModule(
                        self.in_channels if i == 0 else self.feat_channels,
                        self.feat_channels,
                        3,
                        padding=1,
                        inplace=False,
                    )
                    for i in range(self.num_convs)
                ]
            )
        else:
            self.rpn_conv = nn.Conv2d(self.in_channels, self.feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(
            self.feat_channels, self.num_base_priors * self.cls_out_channels, 1
        )
        self.rpn_reg = nn.Conv2d(self.feat_channels, self.num_base_priors * 4, 1)

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.rpn_conv(x))
        return self.rpn_cls(x), self.rpn_reg(x)

    # -- eager reference -------------------------------------------------------------------------
    def predict_proposals(
        self, head_outputs: tuple, img_metas: list[dict], cfg: RpnSettings | None = None
    ) -> list[Tensor]:
        """Eager proposals per image (MMDetection semantics).

        Returns:
            One ``[n, 5]`` tensor ``(x1, y1, x2, y2, score)`` per image, by decreasing score,
            ``n <= max_per_img``, in network-input coordinates.
        """
        cfg = self._cfg(cfg)
        levels = self._levels(head_outputs)
        first = levels[0][0]
        priors = self.get_priors([lvl[0].shape[-2:] for lvl in levels], first.dtype, first.device)
        outputs = [self.level_outputs(*lvl) for lvl in levels]
        nms_pre = cfg.nms_pre
        results = []
        for i, meta in enumerate(img_metas):
            boxes, scores, level_ids = [], [], []
            for lvl, ((level_scores, box_preds, _), level_priors) in enumerate(
                zip(outputs, priors)
            ):
                level_scores = level_scores[i, :, 0]
                order = torch.sort(level_scores, descending=True, stable=True).indices
                if nms_pre > 0:
                    order = order[:nms_pre]
                boxes.append(
                    self.decode(
                        level_priors[order], box_preds[i, order], max_shape=meta['img_shape'][:2]
                    )
                )
                scores.append(level_scores[order])
                level_ids.append(torch.full_like(order, lvl))
            kept = self._nms_single(torch.cat(boxes), torch.cat(scores), torch.cat(level_ids), cfg)
            results.append(kept['dets'])
        return results

    # -- deploy path ---------------------------------------------------------------------------
    def predict_proposals_deploy(
        self, head_outputs: tuple, img_shape: Tensor, cfg: RpnSettings | None = None
    ) -> tuple[Tensor, Tensor]:
        """Traceable batched proposals.

        Args:
            head_outputs: what :meth:`forward` returned.
            img_shape: ``[B, 2]`` float ``(h, w)`` of each real image.

        Returns:
            ``proposals [B, P, 5]`` ``(x1, y1, x2, y2, score)`` with ``P = max_per_img`` and
            ``valid [B, P]`` bool (False on padding rows, which are all zero).
        """
        cfg = self._cfg(cfg)
        levels = self._levels(head_outputs)
        first = levels[0][0]
        priors = self.get_priors([lvl[0].shape[-2:] for lvl in levels], first.dtype, first.device)
        cand_boxes, cand_scores, cand_levels = [], [], []
        for lvl, (level, level_priors) in enumerate(zip(levels, priors)):
            scores, box_preds, factors = self.level_outputs(*level)
            scores, labels, boxes = self._select_level_deploy(
                scores, box_preds, factors, level_priors, img_shape, cfg
            )
            cand_boxes.append(boxes)
            cand_scores.append(scores)
            cand_levels.append(torch.full_like(labels, lvl))
        boxes, scores = torch.cat(cand_boxes, 1), torch.cat(cand_scores, 1)
        level_ids = torch.cat(cand_levels, 1)
        min_size = cfg.min_bbox_size
        if min_size >= 0:
            wh = boxes[..., 2:] - boxes[..., :2]
            scores = torch.where((wh[..., 0] > min_size) & (wh[..., 1] > min_size), scores, 0.0)
        # Levels act as classes: one NMS op does MMDetection's per-level NMS.
        num_levels = len(levels)
        dense = torch.where(
            level_ids.unsqueeze(-1) == torch.arange(num_levels, device=scores.device),
            scores.unsqueeze(-1),
            0.0,
        )
        dets, labels = multiclass_nms(
            boxes, dense, cfg.max_per_img, cfg.nms.iou_threshold, 0.0, cfg.max_per_img
        )
        return dets, labels >= 0
