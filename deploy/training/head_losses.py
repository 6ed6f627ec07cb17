"""Detector losses computed from a zoo detector's public pieces, keyed by its family.

* Dense heads (:class:`AnchorHead` and subclasses: RetinaNet, RPN): ``head(feats)`` outputs,
  ``head.prior_generator``, ``head.bbox_coder``, ``head.num_classes``, ``head.use_sigmoid_cls``
  and the loss configs the head keeps (``loss_cls_cfg``, ``loss_bbox_cfg``).
* Two-stage detectors: RPN losses as above, proposals from the RPN's own eager post-processing
  (with ``train_cfg.rpn_proposal``), then sampled RoIs through ``roi_head.bbox_roi_extractor``,
  ``roi_head.bbox_head`` and, for Mask R-CNN, ``mask_roi_extractor`` / ``mask_head``.

Nothing here is used by inference or export; the zoo's files stay free of training code.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..config.reading import lookup
from ..errors import ConfigError
from ..ops.roi_align import roi_align_eager
from ..settings import parse_settings
from .assigners import build_assigner
from .losses import build_loss
from .rtmdet_targets import pad_to_stride, rtmdet_head_loss
from .samplers import build_sampler
from .settings import DenseTrainSettings, RcnnTrainSettings, TwoStageTrainSettings
from .targets import (
    anchor_valid_flags,
    dense_head_targets,
    mask_targets,
    roi_targets,
    sample_rois,
    sampled_rois,
)

_DEFAULT_CLS = dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)
_DEFAULT_BBOX = dict(type='L1Loss', loss_weight=1.0)


def dense_head_loss(
    head: nn.Module,
    head_outputs: tuple,
    batch: dict,
    train_cfg: DenseTrainSettings | Mapping | None,
    with_labels: bool = True,
) -> dict[str, Tensor]:
    """MMDetection's ``AnchorHead.loss`` for one batch.

    Args:
        head: an anchor head; ``head_outputs``: what ``head(feats)`` returned
            (``cls_scores``, ``bbox_preds``: per level ``[B, A*C, H, W]``, ``[B, A*4, H, W]``).
        batch: ``img_metas``, ``gt_bboxes``, ``gt_labels`` (see :mod:`deploy.training.data`).
        train_cfg: the head's training settings (``assigner``, ``sampler``, ``allowed_border``,
            ``pos_weight``): typed, or the model's ``train_cfg`` dict, parsed here.
        with_labels: False for an RPN (every gt is foreground class 0).

    Returns:
        ``dict(loss_cls, loss_bbox)``; ``avg_factor`` is the number of positives, plus the
        negatives when the sampler samples (RPN), as in MMDetection.
    """
    settings = parse_settings(DenseTrainSettings, train_cfg, 'model.train_cfg')
    cls_scores, bbox_preds = head_outputs[0], head_outputs[1]
    featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
    device = cls_scores[0].device
    anchors = torch.cat(head.prior_generator.grid_priors(featmap_sizes, device=device))
    metas = batch['img_metas']
    valid = [
        torch.cat(
            anchor_valid_flags(
                head.prior_generator, featmap_sizes, m.get('pad_shape', m['img_shape']), device
            )
        )
        for m in metas
    ]
    sampler = build_sampler(settings.sampler)
    targets = dense_head_targets(
        anchors,
        valid,
        batch['gt_bboxes'],
        batch['gt_labels'] if with_labels else None,
        metas,
        assigner=build_assigner(settings.assigner),
        sampler=sampler,
        bbox_coder=head.bbox_coder,
        num_classes=head.num_classes,
        allowed_border=settings.allowed_border,
        pos_weight=settings.pos_weight,
        gt_bboxes_ignore=batch.get('gt_bboxes_ignore'),
    )
    avg_factor = targets.num_total_pos
    if sampler.sampling:
        avg_factor += targets.num_total_neg

    channels = head.cls_out_channels
    cls = torch.cat([head.flatten_level(s, channels) for s in cls_scores], 1).reshape(-1, channels)
    deltas = torch.cat([head.flatten_level(b, 4) for b in bbox_preds], 1).reshape(-1, 4)
    # Softmax heads have C + 1 columns with background last, which is label num_classes.
    labels = targets.labels.reshape(-1)
    loss_cls = build_loss(getattr(head, 'loss_cls_cfg', None) or _DEFAULT_CLS)
    loss_bbox = build_loss(getattr(head, 'loss_bbox_cfg', None) or _DEFAULT_BBOX)
    if getattr(head, 'reg_decoded_bbox', False):
        raise ConfigError('reg_decoded_bbox=True (IoU-type box losses) is not supported')
    pos = targets.bbox_weights.reshape(-1, 4)[:, 0] > 0
    return dict(
        loss_cls=loss_cls(cls, labels, targets.label_weights.reshape(-1), avg_factor=avg_factor),
        loss_bbox=loss_bbox(
            deltas[pos],
            targets.bbox_targets.reshape(-1, 4)[pos],
            targets.bbox_weights.reshape(-1, 4)[pos],
            avg_factor=avg_factor,
        ),
    )


def pool_rois(extractor: nn.Module, feats: tuple[Tensor, ...], rois: Tensor) -> Tensor:
    """Differentiable RoI pooling with a :class:`SingleRoIExtractor`'s own level mapping and
    RoIAlign settings (the eager op behind the extractor has no backward)."""
    levels = extractor.map_roi_levels(rois, extractor.num_inputs)
    out = feats[0].new_zeros(len(rois), extractor.out_channels, *extractor.output_size)
    for i, layer in enumerate(extractor.roi_layers):
        inds = torch.nonzero(levels == i).flatten()
        if len(inds) == 0:
            continue
        pooled = roi_align_eager(
            feats[i],
            rois[inds],
            tuple(layer.output_size),
            layer.spatial_scale,
            layer.sampling_ratio,
            layer.aligned,
        )
        out = out.index_put((inds,), pooled)
    return out


def _rcnn_losses(
    roi_head: nn.Module,
    feats: tuple[Tensor, ...],
    proposals: list[Tensor],
    batch: dict,
    train_cfg: RcnnTrainSettings,
) -> dict[str, Tensor]:
    """MMDetection's ``StandardRoIHead.forward_train``: sample, box losses, mask loss."""
    sampler = build_sampler(train_cfg.sampler)
    results = sample_rois(
        proposals,
        batch['gt_bboxes'],
        batch['gt_labels'],
        assigner=build_assigner(train_cfg.assigner),
        sampler=sampler,
        gt_bboxes_ignore=batch.get('gt_bboxes_ignore'),
    )
    bbox_head = roi_head.bbox_head
    rois = sampled_rois(results)
    cls_score, bbox_pred = bbox_head(pool_rois(roi_head.bbox_roi_extractor, feats, rois))
    targets = roi_targets(
        results, bbox_head.bbox_coder, bbox_head.num_classes, train_cfg.pos_weight
    )
    loss_cls = build_loss(bbox_head.loss_cls_cfg or dict(type='CrossEntropyLoss'))
    loss_bbox = build_loss(bbox_head.loss_bbox_cfg or _DEFAULT_BBOX)
    num_samples = max(float((targets.label_weights > 0).sum()), 1.0)
    pos = targets.labels < bbox_head.num_classes
    if bbox_head.reg_class_agnostic:
        pos_deltas = bbox_pred.reshape(len(rois), 4)[pos]
    else:
        pos_deltas = bbox_pred.reshape(len(rois), -1, 4)[pos, targets.labels[pos]]
    losses = dict(
        loss_cls=loss_cls(cls_score, targets.labels, targets.label_weights, avg_factor=num_samples),
        # MMDetection averages the box loss over all sampled RoIs, not only the positives.
        loss_bbox=loss_bbox(
            pos_deltas,
            targets.bbox_targets[pos],
            targets.bbox_weights[pos],
            avg_factor=targets.bbox_targets.shape[0],
        ),
    )
    if getattr(roi_head, 'mask_head', None) is not None:
        mask_head = roi_head.mask_head
        pos_rois = sampled_rois(results, positives_only=True)
        mask_pred = mask_head(pool_rois(roi_head.mask_roi_extractor, feats, pos_rois))
        mask_size = tuple(mask_pred.shape[-2:])
        targets_mask = mask_targets(results, batch['gt_masks'], mask_size)
        pos_labels = torch.cat([r.pos_gt_labels for r in results])
        loss_mask = build_loss(
            getattr(mask_head, 'loss_mask_cfg', None)
            or dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0)
        )
        if len(pos_rois) == 0:
            losses['loss_mask'] = mask_pred.sum() * 0
        else:
            losses['loss_mask'] = loss_mask(mask_pred, targets_mask, pos_labels)
    return losses


def two_stage_loss(
    model: nn.Module, batch: dict, settings: TwoStageTrainSettings | None = None
) -> dict[str, Tensor]:
    """RPN and R-CNN losses of a :class:`TwoStageDetector` (Faster / Mask R-CNN); ``settings``:
    the typed ``model.train_cfg`` (default: parsed from it here)."""
    if settings is None:
        if isinstance(lookup(model.train_cfg, 'rcnn'), (list, tuple)):
            raise ConfigError('training cascade RoI heads is not supported')
        settings = parse_settings(TwoStageTrainSettings, model.train_cfg, 'model.train_cfg')
    feats = model.extract_feat(batch['img'])
    rpn_outputs = model.rpn_head(feats)
    losses = {
        k.replace('loss_', 'loss_rpn_'): v
        for k, v in dense_head_loss(
            model.rpn_head, rpn_outputs, batch, settings.rpn, with_labels=False
        ).items()
    }
    with torch.no_grad():
        detached = tuple([t.detach() for t in group] for group in rpn_outputs)
        proposals = model.rpn_head.predict_proposals(
            detached, batch['img_metas'], cfg=settings.rpn_proposal
        )
    losses.update(_rcnn_losses(model.roi_head, feats, proposals, batch, settings.rcnn))
    return losses


def detector_loss(model: nn.Module, batch: dict) -> dict[str, Tensor]:
    """Losses of a zoo detector on a training batch, by detector family.

    Returns:
        A dict of scalar losses; the total is their sum.
    """
    if hasattr(model, 'rpn_head') and hasattr(model, 'roi_head'):
        return two_stage_loss(model, batch)
    head = getattr(model, 'bbox_head', None)
    if type(head).__name__ == 'RTMDetSepBNHead':
        outputs = head(model.extract_feat(pad_to_stride(batch['img'], max(head.strides))))
        return rtmdet_head_loss(head, outputs, batch, model.train_cfg or {})
    if head is not None and hasattr(head, 'prior_generator') and hasattr(head, 'bbox_coder'):
        outputs = head(model.extract_feat(batch['img']))
        if len(outputs) != 2:
            raise ConfigError(f'training {type(head).__name__} is not supported')
        return dense_head_loss(head, outputs, batch, model.train_cfg or {})
    raise ConfigError(f'training {type(model).__name__} is not supported')
