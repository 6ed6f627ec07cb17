"""MMDetection's ``DETRHead``: class logits and normalised boxes for every decoder query, and the
selection of the best ``max_per_img`` of them (no NMS).

Post-processing (MMDetection 2.x and 3.x ``_predict_by_feat_single``), per image:

* softmax classifier (DETR's): softmax over ``num_classes + 1`` logits, drop the background
  column (the last), take each query's **best class**, then the top ``max_per_img`` queries;
* sigmoid classifier (``loss_cls.use_sigmoid``): the top ``max_per_img`` (query, class) pairs;
* boxes: ``sigmoid`` outputs are ``(cx, cy, w, h)`` relative to the image's **real** size
  (``img_shape``, not the padded batch): to corners, times ``(w, h)``, clipped to the image.

The eager reference (:meth:`DETRHead.predict_by_feat`) and the exported graph
(:meth:`DETRHead.predict_by_feat_deploy`) share :func:`decode_boxes`, so they differ only in
being per image or batched.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ...ops.topk import clamped_topk
from ...registry import MODELS
from ...spec import DetrSettings, parse_settings
from ..layers.detr_transformer import FFN

__all__ = ['DETRHead', 'decode_boxes']


def decode_boxes(bbox_pred: Tensor, img_hw: Tensor) -> Tensor:
    """Normalised ``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)`` pixels, clipped to the image.

    Args:
        bbox_pred: ``[..., K, 4]`` in ``[0, 1]``, relative to the real image.
        img_hw: ``[..., 1, 2]`` float ``(h, w)`` of the real image (broadcast over K).

    Returns:
        ``[..., K, 4]`` boxes in network-input pixels.
    """
    cx, cy, w, h = bbox_pred.unbind(-1)
    img_h, img_w = img_hw[..., 0], img_hw[..., 1]
    x1 = ((cx - 0.5 * w) * img_w).clamp(min=0).minimum(img_w)
    y1 = ((cy - 0.5 * h) * img_h).clamp(min=0).minimum(img_h)
    x2 = ((cx + 0.5 * w) * img_w).clamp(min=0).minimum(img_w)
    y2 = ((cy + 0.5 * h) * img_h).clamp(min=0).minimum(img_h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


@MODELS.register_module()
class DETRHead(nn.Module):
    """Classification (``fc_cls``) and box regression (``reg_ffn`` -> ReLU -> ``fc_reg`` ->
    sigmoid) of the decoder's query embeddings.

    Children ``fc_cls``, ``reg_ffn.layers.{0.0,1}``, ``fc_reg`` as in MMDetection (2.x and 3.x
    agree on the head's own keys). ``_version = 2`` is what MMDetection 2.12+ writes; older
    checkpoints are renamed by the detector (:mod:`deploy.models.detectors.detr`).

    Args:
        num_classes: object classes (no background).
        embed_dims: channels of the query embeddings.
        num_reg_fcs: linear layers of ``reg_ffn``.
        loss_cls: its ``use_sigmoid`` chooses the classifier (default softmax with background).
        act_cfg: activation of ``reg_ffn`` (2.x argument; ReLU).
        test_cfg: :class:`~deploy.spec.DetrSettings` (or MMDetection's dict).
        sync_cls_avg_factor, loss_bbox, loss_iou, train_cfg, init_cfg: training only.
    """

    _version = 2
    settings_type = DetrSettings
    #: DETR has no score threshold
    threshold_on_output_score = False

    def __init__(
        self,
        num_classes: int,
        embed_dims: int = 256,
        num_reg_fcs: int = 2,
        sync_cls_avg_factor: bool = False,
        loss_cls: Mapping | None = None,
        loss_bbox: Mapping | None = None,
        loss_iou: Mapping | None = None,
        act_cfg: Mapping | None = None,
        train_cfg: Mapping | None = None,
        test_cfg: DetrSettings | Mapping | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.embed_dims = embed_dims
        self.use_sigmoid_cls = bool((loss_cls or {}).get('use_sigmoid', False))
        self.cls_out_channels = num_classes if self.use_sigmoid_cls else num_classes + 1
        self.test_cfg = parse_settings(DetrSettings, test_cfg, 'test_cfg')
        act_cfg = dict(act_cfg or dict(type='ReLU', inplace=True))
        self.fc_cls = nn.Linear(embed_dims, self.cls_out_channels)
        self.activate = nn.ReLU()
        self.reg_ffn = FFN(embed_dims, embed_dims, num_reg_fcs, act_cfg, add_residual=False)
        self.fc_reg = nn.Linear(embed_dims, 4)

    def forward(self, hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder output ``[B, Q, C]`` -> ``cls_scores [B, Q, cls_out_channels]`` (logits) and
        ``bbox_preds [B, Q, 4]`` (normalised ``cx, cy, w, h`` in ``[0, 1]``)."""
        cls_scores = self.fc_cls(hidden_states)
        bbox_preds = self.fc_reg(self.activate(self.reg_ffn(hidden_states))).sigmoid()
        return cls_scores, bbox_preds

    # -- selection shared by eager and deploy -----------------------------------------------------
    def _select(self, cls_scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Best ``k`` detections of ``cls_scores [..., Q, C']`` -> ``scores``, ``labels`` and the
        query index of each, all ``[..., k]``, by decreasing score."""
        if self.use_sigmoid_cls:
            flat = cls_scores.sigmoid().flatten(-2)  # (query, class) pairs
            scores, pair_idx = clamped_topk(flat, k)
            query_idx = torch.div(pair_idx, self.num_classes, rounding_mode='floor')
            return scores, pair_idx - query_idx * self.num_classes, query_idx
        per_query, labels = cls_scores.softmax(-1)[..., :-1].max(-1)
        scores, query_idx = clamped_topk(per_query, k)
        return scores, torch.gather(labels, -1, query_idx), query_idx

    # -- eager reference ---------------------------------------------------------------------
    def predict_by_feat(
        self, cls_scores: Tensor, bbox_preds: Tensor, img_metas: list[dict]
    ) -> list[dict]:
        """MMDetection's post-processing, image by image.

        Args:
            cls_scores: ``[B, Q, C']`` logits of the last decoder layer.
            bbox_preds: ``[B, Q, 4]`` normalised boxes.
            img_metas: one dict per image; ``img_shape`` ``(h, w)`` is the real image.

        Returns:
            One ``dict(dets [k, 5], labels [k])`` per image (network-input pixels, by decreasing
            score), ``k = min(max_per_img, Q)`` (MMDetection fails when ``max_per_img > Q``).
        """
        results = []
        for cls_score, bbox_pred, meta in zip(cls_scores, bbox_preds, img_metas):
            scores, labels, query_idx = self._select(cls_score, self.test_cfg.max_per_img)
            img_hw = cls_score.new_tensor([meta['img_shape'][:2]])  # [1, 2]
            boxes = decode_boxes(bbox_pred[query_idx], img_hw)
            results.append(dict(dets=torch.cat([boxes, scores[:, None]], 1), labels=labels))
        return results

    # -- deploy path -------------------------------------------------------------------------
    def predict_by_feat_deploy(
        self, cls_scores: Tensor, bbox_preds: Tensor, img_shape: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The same selection, batched and traceable.

        Args:
            cls_scores, bbox_preds: as in :meth:`predict_by_feat`.
            img_shape: ``[B, 2]`` float ``(h, w)`` of each real image inside the padding.

        Returns:
            ``dets [B, k, 5]`` and ``labels [B, k]`` int64, ``k = min(max_per_img, Q)``; every
            row is a detection (DETR always returns ``k``).
        """
        scores, labels, query_idx = self._select(cls_scores, self.test_cfg.max_per_img)
        picked = torch.gather(bbox_preds, 1, query_idx.unsqueeze(-1).expand(-1, -1, 4))
        boxes = decode_boxes(picked, img_shape.unsqueeze(1))
        return torch.cat([boxes, scores.unsqueeze(-1)], -1), labels
