"""R-CNN box heads (MMDetection's ``BBoxHead``, ``ConvFCBBoxHead``, ``Shared2FCBBoxHead``).

The head scores each RoI over ``num_classes + 1`` classes (background last, softmax) and regresses
one box per class (``reg_class_agnostic=False``, Faster / Mask R-CNN) or one box for all classes
(cascade stages). Detection post-processing follows MMDetection's ``multiclass_nms``:

    every (RoI, class) pair with ``score > score_thr`` is a candidate, with that class's box;
    NMS per class; the best ``max_per_img`` over all classes.

The deploy path keeps exactly these semantics with a dense score tensor of ``[B, P, C]`` (the size
of the head's output): class-specific boxes are grouped as ``B * C`` NMS batches of ``P`` boxes
and one class each (``[B * C, P, 4]``), so each (image, class) is suppressed on its own boxes with
at most ``max_per_img`` survivors, and a final top-k over the ``C * max_per_img`` survivors per
image picks the best ``max_per_img``. No NMS ever sees more than ``P`` boxes (1000), well within
TensorRT's 5000, and no TopK needs a k above ``max_per_img``.
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...ops.multiclass_nms import multiclass_nms
from ...ops.nms import batched_nms
from ...ops.topk import clamped_topk
from ...registry import MODELS
from ...spec import RcnnSettings
from ..layers import ConvModule


@MODELS.register_module()
class BBoxHead(nn.Module):
    """The predictors ``fc_cls`` and ``fc_reg`` on flattened RoI features.

    Args:
        with_avg_pool: average-pool the RoI features first.
        with_cls, with_reg: build the classifier / regressor.
        roi_feat_size: RoI feature size (int or pair).
        in_channels: RoI feature channels.
        num_classes: object classes (the classifier has one more, background, last).
        bbox_coder: registry config of the delta coder.
        reg_class_agnostic: one box per RoI instead of one per class.
        reg_decoded_bbox, reg_predictor_cfg, cls_predictor_cfg, loss_cls, loss_bbox,
        predict_box_type, init_cfg: accepted for config compatibility (training / 3.x).
    """

    def __init__(
        self,
        with_avg_pool: bool = False,
        with_cls: bool = True,
        with_reg: bool = True,
        roi_feat_size=7,
        in_channels: int = 256,
        num_classes: int = 80,
        bbox_coder: dict | None = None,
        predict_box_type: str = 'hbox',
        reg_class_agnostic: bool = False,
        reg_decoded_bbox: bool = False,
        reg_predictor_cfg: dict | None = None,
        cls_predictor_cfg: dict | None = None,
        loss_cls: dict | None = None,
        loss_bbox: dict | None = None,
        init_cfg=None,
    ):
        super().__init__()
        size = (roi_feat_size, roi_feat_size) if isinstance(roi_feat_size, int) else roi_feat_size
        self.roi_feat_size = tuple(size)
        self.roi_feat_area = self.roi_feat_size[0] * self.roi_feat_size[1]
        self.with_avg_pool = with_avg_pool
        self.with_cls = with_cls
        self.with_reg = with_reg
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.reg_class_agnostic = reg_class_agnostic
        self.bbox_coder = MODELS.build(
            bbox_coder
            or dict(
                type='DeltaXYWHBBoxCoder',
                clip_border=True,
                target_means=[0.0, 0.0, 0.0, 0.0],
                target_stds=[0.1, 0.1, 0.2, 0.2],
            )
        )
        self.loss_cls_cfg = loss_cls
        self.loss_bbox_cfg = loss_bbox
        in_features = in_channels if with_avg_pool else in_channels * self.roi_feat_area
        if with_avg_pool:
            self.avg_pool = nn.AvgPool2d(self.roi_feat_size)
        self._init_predictors(in_features, in_features)

    def _init_predictors(self, cls_in: int, reg_in: int) -> None:
        if self.with_cls:
            self.fc_cls = nn.Linear(cls_in, self.num_classes + 1)
        if self.with_reg:
            out_dim = 4 if self.reg_class_agnostic else 4 * self.num_classes
            self.fc_reg = nn.Linear(reg_in, out_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[K, C, h, w]`` RoI features -> ``cls_score [K, num_classes + 1]`` (logits) and
        ``bbox_pred [K, 4]`` or ``[K, 4 * num_classes]`` (deltas)."""
        if self.with_avg_pool:
            x = self.avg_pool(x)
        x = x.flatten(1)
        return self.fc_cls(x), self.fc_reg(x)

    # -- shared by eager and deploy --------------------------------------------------------------
    def regress_by_class(
        self, boxes: Tensor, labels: Tensor, bbox_pred: Tensor, max_shape
    ) -> Tensor:
        """Refine ``boxes [..., 4]`` with the deltas of class ``labels [...]`` (cascade stages).

        ``max_shape``: ``(h, w)`` (one image) or ``[B, 2]`` with ``[B, P, 4]`` boxes.
        """
        if not self.reg_class_agnostic:
            index = (labels * 4).unsqueeze(-1) + torch.arange(4, device=labels.device)
            bbox_pred = torch.gather(bbox_pred, -1, index)
        return self.bbox_coder.decode(boxes, bbox_pred, max_shape=max_shape)

    # -- eager reference ------------------------------------------------------------------------
    def predict_single(
        self, boxes: Tensor, cls_score: Tensor, bbox_pred: Tensor, img_shape, cfg: RcnnSettings
    ) -> dict:
        """Detections of one image (MMDetection's ``get_bboxes`` + ``multiclass_nms``).

        Args:
            boxes: ``[n, 4]`` RoI boxes; ``cls_score [n, C + 1]`` logits; ``bbox_pred`` deltas.
            img_shape: ``(h, w)`` for clipping.
            cfg: the ``rcnn`` test config.

        Returns:
            ``dict(dets [m, 5], labels [m])`` by decreasing score.
        """
        scores = F.softmax(cls_score, dim=-1)[:, : self.num_classes]
        decoded = self.bbox_coder.decode(boxes, bbox_pred, max_shape=img_shape[:2])
        decoded = decoded.reshape(len(boxes), -1, 4).expand(-1, self.num_classes, 4)
        flat_scores = scores.reshape(-1)
        candidates = torch.nonzero(flat_scores > cfg.score_thr).flatten()
        cand_boxes = decoded.reshape(-1, 4)[candidates]
        cand_scores = flat_scores[candidates]
        cand_labels = candidates % self.num_classes
        keep = batched_nms(cand_boxes, cand_scores, cand_labels, cfg.nms.iou_threshold)
        keep = keep[: cfg.max_per_img]
        return dict(
            dets=torch.cat([cand_boxes[keep], cand_scores[keep, None]], 1), labels=cand_labels[keep]
        )

    # -- deploy path ----------------------------------------------------------------------------
    def predict_deploy(
        self,
        boxes: Tensor,
        valid: Tensor,
        cls_score: Tensor,
        bbox_pred: Tensor,
        img_shape: Tensor,
        cfg: RcnnSettings,
    ) -> tuple[Tensor, Tensor]:
        """Batched, traceable detections with the semantics of :meth:`predict_single`.

        Args:
            boxes: ``[B, P, 4]`` RoI boxes; ``valid [B, P]`` marks real (non-padding) RoIs.
            cls_score: ``[B * P, C + 1]`` logits; ``bbox_pred [B * P, 4 or 4C]``.
            img_shape: ``[B, 2]`` float ``(h, w)``.
            cfg: the ``rcnn`` test config.

        Returns:
            ``dets [B, K, 5]``, ``labels [B, K]`` (K = ``max_per_img``; padding label -1).
        """
        # Only the RoI count P (static: the RPN's max_per_img) is read from a shape, never the
        # batch size (see batched_rois).
        num_rois = boxes.shape[1]
        num_classes = self.num_classes
        scores = F.softmax(cls_score, dim=-1)[:, :num_classes].reshape(-1, num_rois, num_classes)
        scores = torch.where(valid.unsqueeze(-1), scores, 0.0)
        decoded = self.bbox_coder.decode(
            boxes, bbox_pred.reshape(-1, num_rois, bbox_pred.shape[1]), max_shape=img_shape
        )
        max_per_img = cfg.max_per_img
        iou_thr = cfg.nms.iou_threshold
        score_thr = cfg.score_thr
        cap = cfg.boxes_per_class
        if self.reg_class_agnostic:
            return multiclass_nms(decoded, scores, cap, iou_thr, score_thr, max_per_img)
        # One NMS batch per (image, class), each with its own boxes: [B*C, P, 4] and [B*C, P, 1].
        class_boxes = decoded.reshape(-1, num_rois, num_classes, 4).transpose(1, 2)
        class_scores = scores.transpose(1, 2).unsqueeze(-1)
        dets, kept = multiclass_nms(
            class_boxes.reshape(-1, num_rois, 4),
            class_scores.reshape(-1, num_rois, 1),
            cap,
            iou_thr,
            score_thr,
            max_per_img,
        )
        dets = dets.reshape(-1, num_classes * max_per_img, 5)  # [B, C * K, 5], class-major
        class_ids = torch.arange(num_classes, device=dets.device).repeat_interleave(max_per_img)
        labels = torch.where(kept.reshape(-1, num_classes * max_per_img) >= 0, class_ids, -1)
        top_scores, idx = clamped_topk(dets[..., 4], max_per_img)
        dets = torch.gather(dets, 1, idx.unsqueeze(-1).expand(-1, -1, 5))
        labels = torch.gather(labels, 1, idx)
        return dets, torch.where(top_scores > 0, labels, -1)


@MODELS.register_module()
class ConvFCBBoxHead(BBoxHead):
    """Shared convs/fcs, then separate cls and reg convs/fcs, then the predictors::

        shared convs -> shared fcs -+-> cls convs -> cls fcs -> fc_cls
                                    +-> reg convs -> reg fcs -> fc_reg

    Children ``shared_convs``, ``shared_fcs``, ``cls_convs``, ``cls_fcs``, ``reg_convs``,
    ``reg_fcs`` as in MMDetection (empty lists when unused: no keys).
    """

    def __init__(
        self,
        num_shared_convs: int = 0,
        num_shared_fcs: int = 0,
        num_cls_convs: int = 0,
        num_cls_fcs: int = 0,
        num_reg_convs: int = 0,
        num_reg_fcs: int = 0,
        conv_out_channels: int = 256,
        fc_out_channels: int = 1024,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        init_cfg=None,
        **kwargs,
    ):
        self._layout = (
            num_shared_convs,
            num_shared_fcs,
            num_cls_convs,
            num_cls_fcs,
            num_reg_convs,
            num_reg_fcs,
        )
        self.conv_out_channels = conv_out_channels
        self.fc_out_channels = fc_out_channels
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        super().__init__(init_cfg=init_cfg, **kwargs)

    def _init_predictors(self, cls_in: int, reg_in: int) -> None:
        shared_convs, shared_fcs, cls_convs, cls_fcs, reg_convs, reg_fcs = self._layout
        self.shared_convs, self.shared_fcs, last = self._branch(
            shared_convs, shared_fcs, self.in_channels, True
        )
        self.shared_out_channels = last
        self.cls_convs, self.cls_fcs, cls_last = self._branch(cls_convs, cls_fcs, last, False)
        self.reg_convs, self.reg_fcs, reg_last = self._branch(reg_convs, reg_fcs, last, False)
        if shared_fcs == 0 and not self.with_avg_pool:
            cls_last = cls_last * self.roi_feat_area if cls_fcs == 0 else cls_last
            reg_last = reg_last * self.roi_feat_area if reg_fcs == 0 else reg_last
        self.relu = nn.ReLU(inplace=True)
        super()._init_predictors(cls_last, reg_last)

    def _branch(self, num_convs: int, num_fcs: int, in_channels: int, shared: bool):
        convs = nn.ModuleList()
        last = in_channels
        for i in range(num_convs):
            convs.append(
                ConvModule(
                    last if i == 0 else self.conv_out_channels,
                    self.conv_out_channels,
                    3,
                    padding=1,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg,
                )
            )
        if num_convs > 0:
            last = self.conv_out_channels
        fcs = nn.ModuleList()
        if num_fcs > 0:
            if (shared or self._layout[1] == 0) and not self.with_avg_pool:
                last = last * self.roi_feat_area
            for i in range(num_fcs):
                fcs.append(
                    nn.Linear(last if i == 0 else self.fc_out_channels, self.fc_out_channels)
                )
            last = self.fc_out_channels
        return convs, fcs, last

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for conv in self.shared_convs:
            x = conv(x)
        if len(self.shared_fcs) > 0:
            if self.with_avg_pool:
                x = self.avg_pool(x)
            x = x.flatten(1)
            for fc in self.shared_fcs:
                x = self.relu(fc(x))
        x_cls, x_reg = (
            self._run_branch(x, self.cls_convs, self.cls_fcs),
            self._run_branch(x, self.reg_convs, self.reg_fcs),
        )
        return self.fc_cls(x_cls), self.fc_reg(x_reg)

    def _run_branch(self, x: Tensor, convs, fcs) -> Tensor:
        for conv in convs:
            x = conv(x)
        if x.dim() > 2:
            if self.with_avg_pool:
                x = self.avg_pool(x)
            x = x.flatten(1)
        for fc in fcs:
            x = self.relu(fc(x))
        return x


@MODELS.register_module()
class Shared2FCBBoxHead(ConvFCBBoxHead):
    """Two shared fully connected layers (``shared_fcs.0/1``), then ``fc_cls`` and ``fc_reg``."""

    def __init__(self, fc_out_channels: int = 1024, **kwargs):
        super().__init__(
            num_shared_convs=0,
            num_shared_fcs=2,
            num_cls_convs=0,
            num_cls_fcs=0,
            num_reg_convs=0,
            num_reg_fcs=0,
            fc_out_channels=fc_out_channels,
            **kwargs,
        )
