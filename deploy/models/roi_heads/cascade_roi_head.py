"""Cascade R-CNN's RoI head (MMDetection's ``CascadeRoIHead``): stages that refine the boxes.

Inference, as MMDetection 2.x ``simple_test`` and 3.x ``predict`` both do it:

* stage ``i`` pools the current RoIs with its own extractor and scores / regresses them;
* before the last stage, each RoI is moved by the deltas of its best foreground class (argmax of
  the logits without background; the cascade heads are class-agnostic) and clipped to the image;
* the final class scores are the softmax of the **mean of the stages' logits** (``cls_score`` is
  averaged before ``get_bboxes`` / ``predict_by_feat`` applies the softmax), the final boxes are
  the last stage's deltas on the last stage's RoIs, then ``multiclass_nms`` as in Faster R-CNN;
* masks: every stage's mask head runs on the final detections and the **sigmoids** are averaged
  (``merge_aug_masks``).
"""

from torch import Tensor, nn

from ...registry import MODELS
from ...spec import RcnnSettings, parse_settings
from .standard_roi_head import RoIHeadMixin, batched_rois, boxes_to_rois


def _per_stage(cfg, num_stages: int) -> list:
    return list(cfg) if isinstance(cfg, (list, tuple)) else [cfg] * num_stages


@MODELS.register_module()
class CascadeRoIHead(RoIHeadMixin, nn.Module):
    """Children ``bbox_roi_extractor.{i}``, ``bbox_head.{i}`` (and ``mask_roi_extractor.{i}``,
    ``mask_head.{i}``), one per stage; a single config dict is replicated for every stage.

    Args:
        num_stages: number of stages.
        stage_loss_weights: training only (accepted).
        bbox_roi_extractor, bbox_head, mask_roi_extractor, mask_head: config or list of configs.
        train_cfg: ignored; test_cfg: the config's ``test_cfg.rcnn``.
    """

    def __init__(
        self,
        num_stages: int,
        stage_loss_weights,
        bbox_roi_extractor,
        bbox_head,
        mask_roi_extractor=None,
        mask_head=None,
        shared_head=None,
        train_cfg=None,
        test_cfg=None,
        pretrained=None,
        init_cfg=None,
    ):
        super().__init__()
        self.num_stages = num_stages
        self.stage_loss_weights = stage_loss_weights
        self.train_cfg = train_cfg
        self.test_cfg = parse_settings(RcnnSettings, test_cfg, 'test_cfg.rcnn')
        self.bbox_roi_extractor = nn.ModuleList(
            MODELS.build(c) for c in _per_stage(bbox_roi_extractor, num_stages)
        )
        self.bbox_head = nn.ModuleList(MODELS.build(c) for c in _per_stage(bbox_head, num_stages))
        if mask_head is not None:
            self.mask_head = nn.ModuleList(
                MODELS.build(c) for c in _per_stage(mask_head, num_stages)
            )
            if mask_roi_extractor is not None:
                self.mask_roi_extractor = nn.ModuleList(
                    MODELS.build(c) for c in _per_stage(mask_roi_extractor, num_stages)
                )
                self.share_roi_extractor = False
            else:
                self.mask_roi_extractor = self.bbox_roi_extractor
                self.share_roi_extractor = True
        else:
            self.mask_head = None

    def _bbox_forward(self, stage: int, feats, rois: Tensor, deploy: bool):
        extractor = self.bbox_roi_extractor[stage]
        level_feats = feats[: extractor.num_inputs]
        pooled = (
            extractor.forward_deploy(level_feats, rois) if deploy else extractor(level_feats, rois)
        )
        return self.bbox_head[stage](pooled)

    def predict(self, feats, proposals: list[Tensor], img_metas: list[dict]) -> list[dict]:
        """Eager detections per image (see the module docstring)."""
        counts = [len(p) for p in proposals]
        boxes = [p[:, :4] for p in proposals]
        stage_scores = []
        for stage in range(self.num_stages):
            cls_score, bbox_pred = self._bbox_forward(
                stage, feats, boxes_to_rois(boxes), deploy=False
            )
            stage_scores.append(cls_score)
            if stage < self.num_stages - 1:
                labels = cls_score[:, :-1].argmax(dim=1)
                head = self.bbox_head[stage]
                boxes = [
                    head.regress_by_class(b, lab, pred, meta['img_shape'][:2])
                    for b, lab, pred, meta in zip(
                        boxes, labels.split(counts), bbox_pred.split(counts), img_metas
                    )
                ]
        cls_score = sum(stage_scores) / self.num_stages
        results = [
            self.bbox_head[-1].predict_single(b, s, d, meta['img_shape'], self.test_cfg)
            for b, s, d, meta in zip(
                boxes, cls_score.split(counts), bbox_pred.split(counts), img_metas
            )
        ]
        return self._predict_masks(feats, results) if self.with_mask else results

    def predict_deploy(
        self, feats, proposals: Tensor, valid: Tensor, img_shape: Tensor
    ) -> tuple[Tensor, ...]:
        """Traceable version of :meth:`predict` on ``[B, P]`` padded proposals."""
        num_rois = proposals.shape[1]  # static (max_per_img); the batch size is never read
        boxes = proposals[..., :4]
        stage_scores = []
        for stage in range(self.num_stages):
            cls_score, bbox_pred = self._bbox_forward(
                stage, feats, batched_rois(boxes), deploy=True
            )
            stage_scores.append(cls_score)
            if stage < self.num_stages - 1:
                labels = cls_score[:, :-1].argmax(dim=1).reshape(-1, num_rois)
                # Padding rows are zero boxes, and decoding keeps a zero box at zero.
                boxes = self.bbox_head[stage].regress_by_class(
                    boxes, labels, bbox_pred.reshape(-1, num_rois, bbox_pred.shape[1]), img_shape
                )
        cls_score = sum(stage_scores) / self.num_stages
        dets, labels = self.bbox_head[-1].predict_deploy(
            boxes, valid, cls_score, bbox_pred, img_shape, self.test_cfg
        )
        if not self.with_mask:
            return dets, labels
        return dets, labels, self._predict_masks_deploy(feats, dets, labels)
