"""The R-CNN stage of Faster / Mask R-CNN (MMDetection's ``StandardRoIHead``).

Eager (:meth:`predict`, MMDetection semantics, per image): pool the proposals, score and regress
them, keep (RoI, class) pairs above ``score_thr`` with per-class NMS and ``max_per_img``; then pool
the detections' boxes for the mask head and return each detection's mask probabilities (sigmoid of
its class map, ``28 x 28``). Pasting into the image is shared post-processing
(:mod:`deploy.postprocess`), so it is the same for every backend.

Deploy (:meth:`predict_deploy`): the same with fixed shapes: ``B x P`` proposal rows (padding rows
are scored 0), ``max_per_img`` padded detections, and ``masks [B, max_per_img, 28, 28]``.
"""

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ...spec import RcnnSettings, parse_settings


def boxes_to_rois(boxes: list[Tensor]) -> Tensor:
    """Per-image ``[n_i, 4+]`` boxes -> ``[sum n_i, 5]`` RoIs ``(batch_index, x1, y1, x2, y2)``."""
    return torch.cat(
        [torch.cat([b.new_full((len(b), 1), i), b[:, :4]], 1) for i, b in enumerate(boxes)]
    )


def batched_rois(boxes: Tensor) -> Tensor:
    """``[B, P, 4]`` boxes -> ``[B * P, 5]`` RoIs (traceable, batch and P dynamic)."""
    # The batch index is counted with arithmetic on the boxes (a cumulative sum of ones), never
    # from a shape: the legacy exporter gives the NMS op's outputs static shapes, and a shape
    # taken from them would freeze the traced batch size into the graph.
    index = (boxes[..., :1] * 0 + 1).cumsum(0) - 1
    return torch.cat([index, boxes[..., :4]], -1).reshape(-1, 5)


class RoIHeadMixin:
    """What Standard and Cascade RoI heads share: the test config and the mask helpers."""

    test_cfg: RcnnSettings
    #: the R-CNN stage thresholds the softmax scores it outputs
    threshold_on_output_score = True

    @property
    def with_mask(self) -> bool:
        return getattr(self, 'mask_head', None) is not None

    def _stage_masks(self, feats, rois: Tensor, labels: Tensor, deploy: bool) -> Tensor:
        """Mean over mask stages of each RoI's class probability map ``[K, m, m]``."""
        extractors = self.mask_roi_extractor
        heads = self.mask_head
        if isinstance(heads, nn.ModuleList):
            pairs = list(zip(extractors, heads))
        else:
            pairs = [(extractors, heads)]
        total = None
        for extractor, head in pairs:
            level_feats = feats[: extractor.num_inputs]
            pooled = (
                extractor.forward_deploy(level_feats, rois)
                if deploy
                else extractor(level_feats, rois)
            )
            probs = head.class_probs(head(pooled), labels)
            total = probs if total is None else total + probs
        # MMDetection averages the sigmoids of the stages (merge_aug_masks), not the logits.
        return total / len(pairs)

    def _predict_masks(self, feats, results: list[dict]) -> list[dict]:
        """Add ``masks [n, m, m]`` (probabilities) to each image's eager detections."""
        rois = boxes_to_rois([r['dets'] for r in results])
        labels = torch.cat([r['labels'] for r in results])
        size = self._mask_size()
        if len(rois) == 0:
            probs = rois.new_zeros(0, *size)
        else:
            probs = self._stage_masks(feats, rois, labels, deploy=False)
        for r, masks in zip(results, probs.split([len(r['labels']) for r in results])):
            r['masks'] = masks
        return results

    def _predict_masks_deploy(self, feats, dets: Tensor, labels: Tensor) -> Tensor:
        """``dets [B, K, 5]``, ``labels [B, K]`` -> ``masks [B, K, m, m]`` (0 on padding rows)."""
        probs = self._stage_masks(feats, batched_rois(dets), labels.reshape(-1), deploy=True)
        probs = probs.reshape(-1, dets.shape[1], *probs.shape[1:])
        return torch.where((labels >= 0)[..., None, None], probs, 0.0)

    def _mask_size(self) -> tuple[int, int]:
        extractor = self.mask_roi_extractor
        extractor = extractor[0] if isinstance(extractor, nn.ModuleList) else extractor
        size = extractor.output_size
        head = self.mask_head[0] if isinstance(self.mask_head, nn.ModuleList) else self.mask_head
        scale = head.scale_factor if head.upsample is not None else 1
        return (size[0] * scale, size[1] * scale)


@MODELS.register_module()
class StandardRoIHead(RoIHeadMixin, nn.Module):
    """One box head and an optional mask head on RoI-pooled FPN features.

    Args:
        bbox_roi_extractor, bbox_head: registry configs.
        mask_roi_extractor: config, or None to share the box extractor (MMDetection's rule).
        mask_head: config or None (Faster R-CNN).
        train_cfg: ignored; test_cfg: the config's ``test_cfg.rcnn``.
        shared_head, pretrained, init_cfg: ``shared_head`` is not supported (no zoo model uses
            it); the others are accepted for config compatibility.
    """

    def __init__(
        self,
        bbox_roi_extractor: dict,
        bbox_head: dict,
        mask_roi_extractor: dict | None = None,
        mask_head: dict | None = None,
        shared_head: dict | None = None,
        train_cfg: dict | None = None,
        test_cfg: dict | None = None,
        pretrained=None,
        init_cfg=None,
    ):
        super().__init__()
        if shared_head is not None:
            raise ConfigError('StandardRoIHead shared_head is not supported')
        self.train_cfg = train_cfg
        self.test_cfg = parse_settings(RcnnSettings, test_cfg, 'test_cfg.rcnn')
        self.bbox_roi_extractor = MODELS.build(bbox_roi_extractor)
        self.bbox_head = MODELS.build(bbox_head)
        if mask_head is not None:
            self.mask_head = MODELS.build(mask_head)
            if mask_roi_extractor is not None:
                self.mask_roi_extractor = MODELS.build(mask_roi_extractor)
                self.share_roi_extractor = False
            else:
                self.mask_roi_extractor = self.bbox_roi_extractor
                self.share_roi_extractor = True
        else:
            self.mask_head = None

    def _bbox_forward(self, feats, rois: Tensor, deploy: bool) -> tuple[Tensor, Tensor]:
        extractor = self.bbox_roi_extractor
        level_feats = feats[: extractor.num_inputs]
        pooled = (
            extractor.forward_deploy(level_feats, rois) if deploy else extractor(level_feats, rois)
        )
        return self.bbox_head(pooled)

    def predict(self, feats, proposals: list[Tensor], img_metas: list[dict]) -> list[dict]:
        """Eager detections per image: ``dict(dets [n, 5], labels [n](, masks [n, m, m]))``.

        Args:
            feats: FPN maps of the batch.
            proposals: one ``[n_i, 4+]`` tensor per image (input coordinates).
            img_metas: ``img_shape`` is used for clipping.
        """
        rois = boxes_to_rois(proposals)
        cls_score, bbox_pred = self._bbox_forward(feats, rois, deploy=False)
        counts = [len(p) for p in proposals]
        results = [
            self.bbox_head.predict_single(p[:, :4], s, d, meta['img_shape'], self.test_cfg)
            for p, s, d, meta in zip(
                proposals, cls_score.split(counts), bbox_pred.split(counts), img_metas
            )
        ]
        return self._predict_masks(feats, results) if self.with_mask else results

    def predict_deploy(
        self, feats, proposals: Tensor, valid: Tensor, img_shape: Tensor
    ) -> tuple[Tensor, ...]:
        """Traceable: ``proposals [B, P, 5]`` and ``valid [B, P]`` -> ``dets [B, K, 5]``,
        ``labels [B, K]`` (and ``masks [B, K, m, m]`` with a mask head)."""
        boxes = proposals[..., :4]
        cls_score, bbox_pred = self._bbox_forward(feats, batched_rois(boxes), deploy=True)
        dets, labels = self.bbox_head.predict_deploy(
            boxes, valid, cls_score, bbox_pred, img_shape, self.test_cfg
        )
        if not self.with_mask:
            return dets, labels
        return dets, labels, self._predict_masks_deploy(feats, dets, labels)
