"""Post-processing shared by every dense (one-stage) head: the eager reference and the deploy path.

A head family provides its raw outputs per level and says how to turn them into
``scores [B, N, C]``, ``box_preds [B, N, 4]`` and optional ``score_factors [B, N]`` plus priors;
everything after that (top-k, decode, NMS, padding) is here, once, for eager and export alike.

Eager (:meth:`predict_by_feat`, MMDetection semantics, per image):
    per level: keep (prior, class) pairs with ``score > score_thr``, top ``nms_pre`` of them;
    decode; multiply by score factors; drop boxes not larger than ``min_bbox_size``;
    class-aware NMS; keep ``max_per_img``.
Deploy (:meth:`predict_by_feat_deploy`, batched and traceable): the same selection written with
fixed-shape tensors: per-level top ``nms_pre`` over (prior, class) pairs with scores at or below
``score_thr`` zeroed, optional ``deploy_nms_pre`` cut, then :func:`multiclass_nms`, which returns
``max_per_img`` padded rows. Scores are thresholded *before* score factors are applied, as in eager.

Two generic variations, both off unless a head or its config asks for them:
    * ``select_across_levels = True`` (class attribute): the score threshold and the ``nms_pre``
      cut work on all levels at once instead of per level (YOLOv3, MMDetection 3.x semantics).
    * ``conf_thr > 0``: priors whose score factor is below it are no candidates at all
      (YOLOv3's objectness threshold).
"""

import torch
from torch import Tensor, nn

from ...ops.multiclass_nms import multiclass_nms
from ...ops.nms import batched_nms
from ...ops.topk import clamped_topk
from ...spec import DenseSettings, StageSettings, parse_settings


class BaseDenseHead(nn.Module):
    """Base of dense heads. Subclasses implement :meth:`forward`, :meth:`get_priors` and
    :meth:`level_outputs`, and set ``self.bbox_coder``, ``self.num_classes`` and ``self.test_cfg``
    (typed settings from the model's spec, see :mod:`deploy.spec`).
    """

    num_classes: int
    test_cfg: DenseSettings
    #: threshold and top-k (prior, class) pairs over all levels at once instead of per level
    select_across_levels: bool = False
    #: the typed ``test_cfg`` of the head family
    settings_type: type[StageSettings] = DenseSettings
    #: ``score_thr`` is compared with the output scores: False for heads whose score factors
    #: (centerness, objectness) multiply the scores after the threshold
    threshold_on_output_score: bool = True

    @classmethod
    def settings_from(cls, test_cfg) -> StageSettings:
        """``test_cfg`` as the family's settings: typed settings pass through (the detector
        hands over the model spec's), a raw MMDetection dict is parsed and checked."""
        return parse_settings(cls.settings_type, test_cfg, 'test_cfg')

    # -- what a head family provides ---------------------------------------------------------
    def get_priors(
        self, featmap_sizes: list, dtype: torch.dtype, device: torch.device
    ) -> list[Tensor]:
        """Per-level priors ``[N_l, 4]`` (anchors or points) in (y, x, prior) order."""
        return self.prior_generator.grid_priors(featmap_sizes, dtype=dtype, device=device)

    def level_outputs(self, *level_feats: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """One level's raw outputs -> ``scores [B, N, C]`` (activated, no background column),
        ``box_preds [B, N, 4]`` and ``score_factors [B, N]`` or None."""
        raise NotImplementedError(f'{type(self).__name__} must implement level_outputs')

    def decode(self, priors: Tensor, box_preds: Tensor, max_shape) -> Tensor:
        """Box predictions -> ``x1, y1, x2, y2`` boxes, clipped to ``max_shape``."""
        return self.bbox_coder.decode(priors, box_preds, max_shape=max_shape)

    # -- shared helpers ----------------------------------------------------------------------
    @staticmethod
    def flatten_level(x: Tensor, channels: int) -> Tensor:
        """``[B, A*channels, H, W]`` -> ``[B, H*W*A, channels]`` in (y, x, prior) order."""
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, channels)

    def _cfg(self, cfg: DenseSettings | None) -> DenseSettings:
        return self.test_cfg if cfg is None else cfg

    def _levels(self, head_outputs: tuple) -> list[tuple]:
        """Regroup ``(outputs_a per level, outputs_b per level, ...)`` into per-level tuples."""
        return list(zip(*head_outputs))

    def _selection_groups(
        self, outputs: list[tuple], priors: list[Tensor]
    ) -> tuple[list[tuple], list[Tensor]]:
        """The groups candidates are selected in: the levels, or one group of all levels.

        Args:
            outputs: per level ``(scores [B, N_l, C], box_preds [B, N_l, 4], factors or None)``.
            priors: per level ``[N_l, P]``.
        """
        if not self.select_across_levels:
            return outputs, priors
        scores, box_preds, factors = zip(*outputs)
        merged_factors = None if factors[0] is None else torch.cat(factors, 1)
        return [(torch.cat(scores, 1), torch.cat(box_preds, 1), merged_factors)], [
            torch.cat(priors, 0)
        ]

    @staticmethod
    def _confident_priors(factors: Tensor | None, cfg: DenseSettings) -> Tensor | None:
        """Mask of priors whose score factor reaches ``cfg.conf_thr`` (None: no such rule)."""
        conf_thr = getattr(cfg, 'conf_thr', -1.0)
        if factors is None or conf_thr <= 0:
            return None
        return factors >= conf_thr

    # -- eager reference -----------------------------------------------------------------------
    def predict_by_feat(
        self, head_outputs: tuple, img_metas: list[dict], cfg: DenseSettings | None = None
    ) -> list[dict]:
        """Eager detections per image in network-input coordinates.

        Args:
            head_outputs: what :meth:`forward` returned (tuples of per-level tensors).
            img_metas: one meta dict per image (``img_shape`` is used for clipping).

        Returns:
            One ``dict(dets=[n, 5], labels=[n])`` per image, by decreasing score.
        """
        cfg = self._cfg(cfg)
        levels = self._levels(head_outputs)
        first = levels[0][0]
        featmap_sizes = [lvl[0].shape[-2:] for lvl in levels]
        priors = self.get_priors(featmap_sizes, first.dtype, first.device)
        outputs, priors = self._selection_groups(
            [self.level_outputs(*lvl) for lvl in levels], priors
        )
        return [
            self._predict_single(
                [(s[i], b[i], None if f is None else f[i]) for s, b, f in outputs],
                priors,
                img_metas[i],
                cfg,
            )
            for i in range(first.shape[0])
        ]

    def _predict_single(
        self, level_outputs: list, priors: list[Tensor], img_meta: dict, cfg: dict
    ) -> dict:
        score_thr = cfg.score_thr
        nms_pre = cfg.nms_pre
        all_boxes, all_scores, all_labels = [], [], []
        for (scores, box_preds, factors), level_priors in zip(level_outputs, priors):
            num_classes = scores.shape[-1]
            flat = scores.reshape(-1)
            candidates = flat > score_thr
            confident = self._confident_priors(factors, cfg)
            if confident is not None:
                candidates &= confident.repeat_interleave(num_classes)
            valid = torch.nonzero(candidates).flatten()
            order = torch.sort(flat[valid], descending=True, stable=True).indices
            if nms_pre > 0:
                order = order[:nms_pre]
            pair_idx = valid[order]
            prior_idx, labels = pair_idx // num_classes, pair_idx % num_classes
            level_scores = flat[pair_idx]
            if factors is not None:
                level_scores = level_scores * factors[prior_idx]
            all_boxes.append(
                self.decode(
                    level_priors[prior_idx],
                    box_preds[prior_idx],
                    max_shape=img_meta['img_shape'][:2],
                )
            )
            all_scores.append(level_scores)
            all_labels.append(labels)
        boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        return self._nms_single(boxes, scores, labels, cfg)

    @staticmethod
    def _nms_single(boxes: Tensor, scores: Tensor, labels: Tensor, cfg) -> dict:
        """Size filter, class-aware NMS and ``max_per_img`` of one image's candidates."""
        min_size = cfg.min_bbox_size
        if min_size >= 0:
            wh = boxes[:, 2:] - boxes[:, :2]
            large = (wh[:, 0] > min_size) & (wh[:, 1] > min_size)
            boxes, scores, labels = boxes[large], scores[large], labels[large]
        keep = batched_nms(boxes, scores, labels, cfg.nms.iou_threshold)
        keep = keep[: cfg.max_per_img]
        return dict(dets=torch.cat([boxes[keep], scores[keep, None]], dim=1), labels=labels[keep])

    # -- deploy path ---------------------------------------------------------------------------
    def predict_by_feat_deploy(
        self, head_outputs: tuple, img_shape: Tensor, cfg: DenseSettings | None = None
    ) -> tuple[Tensor, Tensor]:
        """Traceable batched post-processing.

        Args:
            head_outputs: what :meth:`forward` returned.
            img_shape: ``[B, 2]`` float32 ``(h, w)`` of each real image inside the padded input.

        Returns:
            ``dets [B, K, 5]`` and ``labels [B, K]`` (K = ``max_per_img``; padding label -1).
        """
        cfg = self._cfg(cfg)
        levels = self._levels(head_outputs)
        first = levels[0][0]
        featmap_sizes = [lvl[0].shape[-2:] for lvl in levels]
        priors = self.get_priors(featmap_sizes, first.dtype, first.device)
        outputs, priors = self._selection_groups(
            [self.level_outputs(*lvl) for lvl in levels], priors
        )
        cand_scores, cand_labels, cand_boxes = [], [], []
        for (scores, box_preds, factors), level_priors in zip(outputs, priors):
            scores, labels, boxes = self._select_level_deploy(
                scores, box_preds, factors, level_priors, img_shape, cfg
            )
            cand_scores.append(scores)
            cand_labels.append(labels)
            cand_boxes.append(boxes)
        return self.nms_deploy(
            torch.cat(cand_boxes, 1), torch.cat(cand_scores, 1), torch.cat(cand_labels, 1), cfg
        )

    def _select_level_deploy(
        self,
        scores: Tensor,
        box_preds: Tensor,
        factors: Tensor | None,
        priors: Tensor,
        img_shape: Tensor,
        cfg: DenseSettings,
    ):
        """Top ``nms_pre`` (prior, class) pairs of a level -> scores, labels, boxes ``[B, k]``."""
        batch, _, num_classes = scores.shape
        confident = self._confident_priors(factors, cfg)
        if confident is not None:
            # Zeroed pairs rank last and fail the score threshold below, as if filtered out.
            scores = torch.where(confident.unsqueeze(-1), scores, 0.0)
        top_scores, pair_idx = clamped_topk(scores.reshape(batch, -1), cfg.nms_pre)
        prior_idx = torch.div(pair_idx, num_classes, rounding_mode='floor')
        labels = pair_idx - prior_idx * num_classes
        # Thresholding before the score factors keeps eager's candidate set (FCOS centerness).
        top_scores = torch.where(top_scores > cfg.score_thr, top_scores, 0.0)
        if factors is not None:
            top_scores = top_scores * torch.gather(factors, 1, prior_idx)
        preds = torch.gather(box_preds, 1, prior_idx.unsqueeze(-1).expand(-1, -1, 4))
        boxes = self.decode(priors[prior_idx], preds, max_shape=img_shape)
        return top_scores, labels, boxes

    def nms_deploy(
        self, boxes: Tensor, scores: Tensor, labels: Tensor, cfg: DenseSettings
    ) -> tuple[Tensor, Tensor]:
        """Candidates ``[B, M]`` (one class each) -> padded ``dets``, ``labels`` via ONNX NMS."""
        min_size = cfg.min_bbox_size
        if min_size >= 0:
            wh = boxes[..., 2:] - boxes[..., :2]
            scores = torch.where((wh[..., 0] > min_size) & (wh[..., 1] > min_size), scores, 0.0)
        deploy_nms_pre = cfg.deploy_nms_pre
        if deploy_nms_pre > 0:
            scores, idx = clamped_topk(scores, deploy_nms_pre)
            labels = torch.gather(labels, 1, idx)
            boxes = torch.gather(boxes, 1, idx.unsqueeze(-1).expand(-1, -1, 4))
        num_classes = self.num_classes
        class_ids = torch.arange(num_classes, device=labels.device)
        dense_scores = torch.where(labels.unsqueeze(-1) == class_ids, scores.unsqueeze(-1), 0.0)
        return multiclass_nms(
            boxes,
            dense_scores,
            cfg.boxes_per_class,
            cfg.nms.iou_threshold,
            0.0,
            cfg.max_per_img,
        )
