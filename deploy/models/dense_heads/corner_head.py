"""CornerNet's head (MMDetection's ``CornerHead``): objects as pairs of corners.

Per feature level (one per hourglass stack; the test uses the last), each corner type -- top-left
(``tl_``) and bottom-right (``br_``) -- has a :class:`BiCornerPool` feature and three branches on
it: a class heatmap ``heat [B, C, H, W]``, an embedding ``emb [B, 1, H, W]`` and a sub-pixel
offset ``off [B, 2, H, W]``.

Decoding (MMDetection's ``decode_heatmap``, per image, batched here):

1. heatmaps through a sigmoid; keep local maxima (a pixel equal to the max of its
   ``local_maximum_kernel`` neighbourhood), zero the rest;
2. the ``corner_topk`` best (class, pixel) pairs of each corner type;
3. corner positions ``(x + offset) * input/feature size - image offset``, clamped at 0 (the
   offset is where the image sits inside the network input, see
   :meth:`deploy.spec.PreprocessConfig.image_offset`): boxes relative to the image;
4. every (top-left, bottom-right) pair is a box scoring the mean of its corner scores, rejected
   (score -1) when the classes differ, the embeddings are farther apart than
   ``distance_threshold``, or the box has no width or height;
5. the best ``num_dets = 1000`` pairs; the ones not rejected (score > -0.1) are the candidates of
   soft-NMS (:mod:`deploy.ops.soft_nms`), which keeps ``max_per_img``.

Both top-k steps rank equal scores by index (lower first, as ONNX ``TopK`` does in the graph);
MMDetection's ``torch.topk`` leaves that order unspecified.

MMDetection's ``CornerHead`` ignores ``test_cfg.score_thr``; so does this one. The eager path
(:meth:`CornerHead.predict_by_feat`) and the exported one
(:meth:`CornerHead.predict_by_feat_deploy`) share steps 1-5; then the eager one runs soft-NMS per
image on its candidates, the exported one the batched op with padded outputs.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.corner_pool import corner_pool
from ...ops.multiclass_nms import multiclass_nms
from ...ops.nms import batched_nms
from ...ops.soft_nms import batched_soft_nms, soft_nms
from ...ops.topk import clamped_topk
from ...ops.traced_shape import traced_shape
from ...registry import MODELS
from ...spec import CornerSettings, parse_settings
from ..layers import ConvModule

#: pairs ranked before NMS (MMDetection's ``decode_heatmap(num_dets=1000)``)
NUM_DETS = 1000


class BiCornerPool(nn.Module):
    """Two corner pools on two conv branches, summed, plus a residual branch.

    ``conv2(relu(aftpool_conv(pool1(direction1_conv(x)) + pool2(direction2_conv(x))) +
    conv1(x)))``; children named as MMDetection's ``BiCornerPool``.

    Args:
        in_channels: input channels.
        directions: the two :func:`~deploy.ops.corner_pool.corner_pool` modes (``['top',
            'left']`` for top-left corners, ``['bottom', 'right']`` for bottom-right).
        feat_channels: channels of the pooled branches.
        out_channels: output channels.
        norm_cfg: norm of every conv.
    """

    def __init__(
        self,
        in_channels: int,
        directions: list[str],
        feat_channels: int = 128,
        out_channels: int = 128,
        norm_cfg: dict | None = None,
    ):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN', requires_grad=True)
        self.direction1_conv = ConvModule(
            in_channels, feat_channels, 3, padding=1, norm_cfg=norm_cfg
        )
        self.direction2_conv = ConvModule(
            in_channels, feat_channels, 3, padding=1, norm_cfg=norm_cfg
        )
        self.aftpool_conv = ConvModule(
            feat_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=None
        )
        self.conv1 = ConvModule(in_channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None)
        self.conv2 = ConvModule(in_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg)
        self.directions = tuple(directions)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_channels, H, W]`` -> ``[B, out_channels, H, W]``."""
        pooled = corner_pool(self.direction1_conv(x), self.directions[0]) + corner_pool(
            self.direction2_conv(x), self.directions[1]
        )
        return self.conv2(self.relu(self.aftpool_conv(pooled) + self.conv1(x)))


def local_maximum(heat: Tensor, kernel: int) -> Tensor:
    """``heat`` where it equals the maximum of its ``kernel x kernel`` neighbourhood, else 0."""
    pad = (kernel - 1) // 2
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=pad)
    return heat * (hmax == heat).float()


def spatial_size(x: Tensor) -> Tensor:
    """``(h, w)`` of ``x [..., H, W]`` as a float32 tensor ``[2]`` that stays dynamic in both
    exporters (MMDetection scales corners by input size / feature size: 511 / 128, not 4)."""
    shape = traced_shape(x)
    if shape is not None:
        return shape[-2:].float()
    return torch.stack([torch.scalar_tensor(x.shape[-2]), torch.scalar_tensor(x.shape[-1])]).to(
        torch.float32
    )


def gather_pixels(feat: Tensor, index: Tensor) -> Tensor:
    """``feat [B, C, H, W]`` at flat pixel indices ``index [B, k]`` -> ``[B, k, C]``."""
    batch, channels = feat.shape[:2]
    flat = feat.permute(0, 2, 3, 1).reshape(batch, -1, channels)
    return torch.gather(flat, 1, index.unsqueeze(-1).expand(-1, -1, channels))


@MODELS.register_module()
class CornerHead(nn.Module):
    """CornerNet head with MMDetection's arguments and children (see the module docstring).

    Args:
        num_classes: object classes.
        in_channels: channels of each feature level.
        num_feat_levels: feature levels (2 for Hourglass-104's two stacks).
        corner_emb_channels: embedding channels; CornerNet's decoding needs 1.
        train_cfg: unused at test time.
        test_cfg: :class:`~deploy.spec.CornerSettings` or MMDetection's dict.
        loss_heatmap, loss_embedding, loss_offset, init_cfg: training only; accepted.
    """

    #: soft-NMS rescales the scores, and ``score_thr`` is never applied (as in MMDetection)
    threshold_on_output_score = False
    #: names of one level's outputs (``forward_raw``), in :meth:`forward_single`'s order
    raw_output_prefixes = ('tl_heat', 'br_heat', 'tl_emb', 'br_emb', 'tl_off', 'br_off')

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        num_feat_levels: int = 2,
        corner_emb_channels: int = 1,
        train_cfg: dict | None = None,
        test_cfg: CornerSettings | dict | None = None,
        loss_heatmap: dict | None = None,
        loss_embedding: dict | None = None,
        loss_offset: dict | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        if corner_emb_channels != 1:
            raise ConfigError(
                f'CornerHead: corner_emb_channels={corner_emb_channels} is not supported: '
                'CornerNet pairs corners by a 1-channel embedding (MMDetection decodes only that)'
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.num_feat_levels = num_feat_levels
        self.corner_emb_channels = corner_emb_channels
        self.corner_offset_channels = 2
        self.train_cfg = train_cfg
        self.test_cfg = parse_settings(CornerSettings, test_cfg, 'test_cfg')
        self.tl_pool, self.br_pool = nn.ModuleList(), nn.ModuleList()
        self.tl_heat, self.br_heat = nn.ModuleList(), nn.ModuleList()
        self.tl_off, self.br_off = nn.ModuleList(), nn.ModuleList()
        self.tl_emb, self.br_emb = nn.ModuleList(), nn.ModuleList()
        for _ in range(num_feat_levels):
            for pools, directions in (
                (self.tl_pool, ['top', 'left']),
                (self.br_pool, ['bottom', 'right']),
            ):
                pools.append(BiCornerPool(in_channels, directions, out_channels=in_channels))
            for branches, out_channels in (
                ((self.tl_heat, self.br_heat), num_classes),
                ((self.tl_off, self.br_off), self.corner_offset_channels),
                ((self.tl_emb, self.br_emb), corner_emb_channels),
            ):
                for branch in branches:
                    branch.append(self._make_layers(out_channels, in_channels))

    @staticmethod
    def _make_layers(out_channels: int, in_channels: int, feat_channels: int = 256):
        """3x3 conv + ReLU, then a 1x1 conv to ``out_channels`` (both with bias)."""
        return nn.Sequential(
            ConvModule(in_channels, feat_channels, 3, padding=1),
            ConvModule(feat_channels, out_channels, 1, norm_cfg=None, act_cfg=None),
        )

    # -- forward -------------------------------------------------------------------------------
    def forward_single(self, x: Tensor, level: int) -> list[Tensor]:
        """One level's ``[tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off]``."""
        tl_pool = self.tl_pool[level](x)
        br_pool = self.br_pool[level](x)
        return [
            self.tl_heat[level](tl_pool),
            self.br_heat[level](br_pool),
            self.tl_emb[level](tl_pool),
            self.br_emb[level](br_pool),
            self.tl_off[level](tl_pool),
            self.br_off[level](br_pool),
        ]

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], ...]:
        """Per level ``(tl_heats, br_heats, tl_embs, br_embs, tl_offs, br_offs)``: heatmaps
        ``[B, C, H, W]`` (logits), embeddings ``[B, 1, H, W]``, offsets ``[B, 2, H, W]``."""
        outs = [self.forward_single(x, level) for level, x in enumerate(feats)]
        return tuple(list(group) for group in zip(*outs))

    def forward_test(self, feats: list[Tensor]) -> list[Tensor]:
        """The last level's outputs only: all that decoding uses (the other levels train)."""
        return self.forward_single(feats[-1], len(feats) - 1)

    # -- decoding ------------------------------------------------------------------------------
    def decode(
        self,
        outputs: list[Tensor],
        input_size: Tensor,
        img_offsets: Tensor,
        cfg: CornerSettings | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Steps 1-5 of the module docstring for a batch (traceable).

        Args:
            outputs: one level's ``[tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off]``.
            input_size: ``[2]`` float ``(h, w)`` of the network input.
            img_offsets: ``[B, 2]`` float ``(top, left)`` of each image inside the input.

        Returns:
            ``boxes [B, M, 4]`` (relative to each image), ``scores [B, M]`` (-1: rejected) and
            ``labels [B, M]`` int64, best first, ``M = min(1000, k * k)``.
        """
        cfg = self.test_cfg if cfg is None else cfg
        tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off = outputs
        batch = tl_heat.shape[0]
        feat_size = spatial_size(tl_heat)
        scale = input_size / feat_size  # (h, w) input pixels per feature pixel
        width = feat_size[1].long()
        pixels = feat_size[0].long() * width
        corners = []
        for heat, emb, off in ((tl_heat, tl_emb, tl_off), (br_heat, br_emb, br_off)):
            heat = local_maximum(heat.sigmoid(), cfg.local_maximum_kernel)
            score, index = clamped_topk(heat.reshape(batch, -1), cfg.corner_topk)
            label = torch.div(index, pixels, rounding_mode='floor')
            pixel = index - label * pixels
            ys = torch.div(pixel, width, rounding_mode='floor')
            xs = pixel - ys * width
            offset = gather_pixels(off, pixel)
            # MMDetection's order: (x + offset) * scale, then minus the image offset, clamp at 0
            x = (xs.float() + offset[..., 0]) * scale[1] - img_offsets[:, 1:2]
            y = (ys.float() + offset[..., 1]) * scale[0] - img_offsets[:, 0:1]
            x = torch.where(x > 0.0, x, 0.0)
            y = torch.where(y > 0.0, y, 0.0)
            corners.append((score, label, x, y, gather_pixels(emb, pixel)[..., 0]))
        (tl_score, tl_label, tl_x, tl_y, tl_e), (br_score, br_label, br_x, br_y, br_e) = corners
        # every (top-left i, bottom-right j) pair: [B, k, k]
        tl_x, tl_y, br_x, br_y = tl_x[:, :, None], tl_y[:, :, None], br_x[:, None], br_y[:, None]
        boxes = torch.stack(torch.broadcast_tensors(tl_x, tl_y, br_x, br_y), dim=3)
        scores = (tl_score[:, :, None] + br_score[:, None]) / 2
        rejected = (
            (tl_label[:, :, None] != br_label[:, None])
            | ((tl_e[:, :, None] - br_e[:, None]).abs() > cfg.distance_threshold)
            | (br_x <= tl_x)
            | (br_y <= tl_y)
        )
        scores = torch.where(rejected, -1.0, scores).reshape(batch, -1)
        labels = tl_label[:, :, None].expand_as(rejected).reshape(batch, -1)
        scores, pair = clamped_topk(scores, NUM_DETS)
        boxes = torch.gather(boxes.reshape(batch, -1, 4), 1, pair[..., None].expand(-1, -1, 4))
        return boxes, scores, torch.gather(labels, 1, pair)

    def predict_by_feat(
        self,
        outputs: list[Tensor],
        input_size: Tensor,
        img_offsets: Tensor,
        cfg: CornerSettings | None = None,
    ) -> list[dict]:
        """Eager detections, one ``dict(dets [n, 5], labels [n])`` per image, relative to the
        image, by pick order (MMDetection's ``_get_bboxes_single`` + ``_bboxes_nms``)."""
        cfg = self.test_cfg if cfg is None else cfg
        boxes, scores, labels = self.decode(outputs, input_size, img_offsets, cfg)
        results = []
        for img_boxes, img_scores, img_labels in zip(boxes, scores, labels):
            keep = img_scores > -0.1
            img_boxes, img_scores, img_labels = img_boxes[keep], img_scores[keep], img_labels[keep]
            if cfg.nms.type == 'soft_nms':
                dets, img_labels = soft_nms(
                    img_boxes,
                    img_scores,
                    img_labels,
                    cfg.nms.iou_threshold,
                    cfg.nms.sigma,
                    cfg.nms.min_score,
                    cfg.nms.method,
                    max_num=cfg.max_per_img,
                )
            else:  # hard NMS: candidates need a positive score, as in the graph's ONNX NMS
                positive = img_scores > 0
                img_boxes, img_scores = img_boxes[positive], img_scores[positive]
                img_labels = img_labels[positive]
                keep = batched_nms(img_boxes, img_scores, img_labels, cfg.nms.iou_threshold)
                keep = keep[: cfg.max_per_img]
                dets = torch.cat([img_boxes[keep], img_scores[keep, None]], 1)
                img_labels = img_labels[keep]
            results.append(dict(dets=dets, labels=img_labels))
        return results

    def predict_by_feat_deploy(
        self,
        outputs: list[Tensor],
        input_size: Tensor,
        img_offsets: Tensor,
        cfg: CornerSettings | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Traceable batched detections: ``dets [B, K, 5]``, ``labels [B, K]`` (K =
        ``max_per_img``, padding label -1), the same as :meth:`predict_by_feat`."""
        cfg = self.test_cfg if cfg is None else cfg
        boxes, scores, labels = self.decode(outputs, input_size, img_offsets, cfg)
        if cfg.nms.type == 'soft_nms':
            return batched_soft_nms(
                boxes,
                scores,
                labels,
                scores > -0.1,
                cfg.nms.iou_threshold,
                cfg.nms.sigma,
                cfg.nms.min_score,
                cfg.nms.method,
                cfg.max_per_img,
            )
        class_ids = torch.arange(self.num_classes, device=labels.device)
        dense = torch.where(labels[..., None] == class_ids, scores[..., None], 0.0)
        return multiclass_nms(
            boxes, dense, cfg.boxes_per_class, cfg.nms.iou_threshold, 0.0, cfg.max_per_img
        )
