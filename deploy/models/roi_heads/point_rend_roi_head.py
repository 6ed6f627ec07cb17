"""PointRend's RoI head (MMDetection's ``PointRendRoIHead``): Mask R-CNN's box stage, then masks
refined point by point.

Mask inference, for each detection (box in input pixels, predicted class ``c``):

1. **Coarse mask.** The box is pooled from P2 (``SimpleRoIAlign``, 14 x 14) and the
   :class:`~.point_rend_mask_heads.CoarseMaskHead` predicts ``7 x 7`` logits per class.
2. **Subdivision**, ``subdivision_steps`` times (``test_cfg.rcnn``):

   * upsample the current logits ``scale_factor`` x (bilinear, ``align_corners=False``);
   * *skip the rest of the step* when ``subdivision_num_points >= scale_factor**2 * h * w``
     (``h x w`` the size just reached), unless it is the last step: the next step's points would
     cover the whole next grid anyway (so with 784 points the 14 x 14 step is skipped);
   * pick the ``min(subdivision_num_points, h * w)`` most uncertain cells: uncertainty is
     ``-|logit|`` of class ``c``;
   * at their centres, sample fine-grained features from the extractor's levels (P2) and the
     *coarse* 7 x 7 logits of every class (``point_sample``, bilinear, ``align_corners=False``);
   * the :class:`~.point_rend_mask_heads.MaskPointHead` predicts new logits there, which replace
     the upsampled ones (a scatter).

3. The sigmoid of class ``c``'s refined ``S x S`` logits (``S = 7 * scale_factor**steps``, 224
   with the COCO config) is the detection's mask, pasted to the image by the shared
   post-processing exactly as Mask R-CNN's 28 x 28 grids (MMDetection's ``get_seg_masks`` pastes
   the refined grid the same way).

MMDetection upsamples and scatters all ``num_classes`` channels but only ever reads class ``c``'s
(the uncertainty, and the mask it returns); every step works per channel, so carrying class
``c``'s channel alone gives the same values at ``1 / num_classes`` of the memory (an
``80 x 224 x 224`` grid per detection would be 16 MB). The point head still sees the coarse logits
of every class, as it must.

One implementation (:meth:`PointRendRoIHead.refine_mask_logits`) serves eager prediction (one
image at a time, as MMDetection) and the exported graph (``B x K`` padded detections). The mask
grids have static sizes (only the RoI count and the feature maps vary): the top-k is a TopK whose
k is at most ``subdivision_num_points`` (784, below TensorRT's limit of 3840; equal ties go to the
lower index in eager mode too, as in TopK), the point sampling GridSample (opset 16+), the
upsampling a linear half-pixel Resize, the write-back ScatterElements.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ConfigError
from ...ops.point_sample import point_sample, roi_points_to_image_points, uncertain_point_coords
from ...ops.topk import clamped_topk
from ...registry import MODELS
from ...spec import PointRendSettings, parse_settings
from .standard_roi_head import StandardRoIHead, batched_rois, boxes_to_rois


@MODELS.register_module()
class PointRendRoIHead(StandardRoIHead):
    """:class:`StandardRoIHead` with a ``point_head`` that refines the coarse masks.

    Args:
        point_head: registry config of the point head (``MaskPointHead``).
        test_cfg: the config's ``test_cfg.rcnn`` (:class:`~deploy.spec.PointRendSettings`).
        **kwargs: as :class:`StandardRoIHead` (a mask head is required).
    """

    test_cfg: PointRendSettings

    def __init__(self, point_head: dict, test_cfg=None, **kwargs):
        test_cfg = parse_settings(PointRendSettings, test_cfg, 'test_cfg.rcnn')
        super().__init__(test_cfg=test_cfg, **kwargs)
        if not self.with_mask:
            raise ConfigError('PointRendRoIHead needs a mask_head')
        if test_cfg.subdivision_steps < 0 or test_cfg.subdivision_num_points < 1:
            raise ConfigError(
                'test_cfg.rcnn needs subdivision_steps >= 0 and subdivision_num_points >= 1'
            )
        if test_cfg.scale_factor < 1:
            raise ConfigError('test_cfg.rcnn.scale_factor must be a positive integer')
        self.point_head = MODELS.build(point_head)

    def _mask_size(self) -> tuple[int, int]:
        """``(S, S)``: the coarse size times ``scale_factor ** subdivision_steps``."""
        growth = self.test_cfg.scale_factor**self.test_cfg.subdivision_steps
        height, width = self.mask_head.output_size
        return (height * growth, width * growth)

    # -- the subdivision, shared by eager and deploy --------------------------------------------
    def fine_grained_point_feats(self, feats, rois: Tensor, points: Tensor) -> Tensor:
        """Features of the extractor's levels at RoI points, concatenated over levels.

        Args:
            feats: the FPN maps ``[B, C, H, W]`` (the first ``num_inputs`` are read).
            rois: ``[B * n, 5]``, n RoIs per image, image-major (eager: B = 1).
            points: ``[B * n, P, 2]`` ``(x, y)`` in ``[0, 1]`` of each RoI.

        Returns:
            ``[B * n, sum of level channels, P]``.
        """
        extractor = self.mask_roi_extractor
        num_points = points.shape[1]
        per_level = []
        for level, stride in enumerate(extractor.featmap_strides):
            level_feats = feats[level]
            img_points = roi_points_to_image_points(rois, points, level_feats, 1.0 / stride)
            grid = img_points.reshape(level_feats.shape[0], -1, num_points, 2)
            sampled = point_sample(level_feats, grid)  # [B, C, n, P]
            per_level.append(sampled.transpose(1, 2).reshape(-1, level_feats.shape[1], num_points))
        return torch.cat(per_level, dim=1)

    def refine_mask_logits(
        self, feats, rois: Tensor, labels: Tensor, coarse_logits: Tensor
    ) -> Tensor:
        """The subdivision steps (see the module docstring), traceable.

        Args:
            feats: FPN maps of the ``B`` images.
            rois: ``[B * n, 5]`` image-major RoIs (the detections' boxes).
            labels: ``[B * n]`` predicted classes (negative on padding rows: read as class 0).
            coarse_logits: ``[B * n, num_classes, h0, w0]`` from the coarse mask head.

        Returns:
            ``[B * n, S, S]`` refined logits of each RoI's class.
        """
        cfg = self.test_cfg
        labels = labels.clamp(min=0)
        # Python ints (the coarse size is the head's): the mask grid never depends on the input.
        height, width = self.mask_head.output_size
        index = labels.reshape(-1, 1, 1, 1).expand(-1, 1, height, width)
        refined = torch.gather(coarse_logits, 1, index)  # [N, 1, h0, w0]
        for step in range(cfg.subdivision_steps):
            refined = F.interpolate(
                refined, scale_factor=cfg.scale_factor, mode='bilinear', align_corners=False
            )
            height, width = height * cfg.scale_factor, width * cfg.scale_factor
            area = height * width
            last = step == cfg.subdivision_steps - 1
            if cfg.subdivision_num_points >= cfg.scale_factor**2 * area and not last:
                continue
            uncertainty = -refined.abs().reshape(-1, area)
            num_points = min(cfg.subdivision_num_points, area)
            _, point_indices = clamped_topk(uncertainty, num_points)
            points = uncertain_point_coords(point_indices, height, width, refined.dtype)
            fine = self.fine_grained_point_feats(feats, rois, points)
            coarse = point_sample(coarse_logits, points)  # [N, num_classes, k]
            point_logits = self.point_head(fine, coarse)  # [N, num_classes, k]
            class_index = labels.reshape(-1, 1, 1).expand(-1, 1, num_points)
            point_logits = torch.gather(point_logits, 1, class_index)  # [N, 1, k]
            refined = refined.reshape(-1, 1, area).scatter(2, point_indices[:, None], point_logits)
            refined = refined.reshape(-1, 1, height, width)
        return refined[:, 0]

    def _mask_probs(self, feats, rois: Tensor, labels: Tensor, deploy: bool) -> Tensor:
        """``rois [B * n, 5]`` (image-major), ``labels [B * n]`` -> ``[B * n, S, S]`` mask
        probabilities of each RoI's class."""
        extractor = self.mask_roi_extractor
        level_feats = feats[: extractor.num_inputs]
        pooled = (
            extractor.forward_deploy(level_feats, rois) if deploy else extractor(level_feats, rois)
        )
        coarse_logits = self.mask_head(pooled)
        return self.refine_mask_logits(level_feats, rois, labels, coarse_logits).sigmoid()

    # -- eager ----------------------------------------------------------------------------------
    def _predict_masks(self, feats, results: list[dict]) -> list[dict]:
        """Add ``masks [n, S, S]`` (probabilities) to each image's eager detections, one image at
        a time as MMDetection's ``simple_test_mask``."""
        for i, result in enumerate(results):
            dets = result['dets']
            if len(dets) == 0:
                result['masks'] = dets.new_zeros(0, *self._mask_size())
                continue
            image_feats = tuple(f[i : i + 1] for f in feats)
            rois = boxes_to_rois([dets])  # batch index 0: the image's own maps
            result['masks'] = self._mask_probs(image_feats, rois, result['labels'], deploy=False)
        return results

    # -- deploy ---------------------------------------------------------------------------------
    def _predict_masks_deploy(self, feats, dets: Tensor, labels: Tensor) -> Tensor:
        """``dets [B, K, 5]``, ``labels [B, K]`` -> ``masks [B, K, S, S]`` (0 on padding rows)."""
        probs = self._mask_probs(feats, batched_rois(dets), labels.reshape(-1), deploy=True)
        probs = probs.reshape(-1, dets.shape[1], *self._mask_size())
        return torch.where((labels >= 0)[..., None, None], probs, 0.0)
