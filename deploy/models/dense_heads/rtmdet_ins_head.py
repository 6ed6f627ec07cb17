"""RTMDet-Ins's head (MMDetection's ``RTMDetInsSepBNHead``): RTMDet's head plus per-instance
dynamic convolution kernels and a shared mask feature.

Per level: ``cls_score``, ``bbox_pred`` (``relu(rtm_reg(x)) * stride``; the box branch runs the
class tower: ``reg_convs`` *is* ``cls_convs``) and ``kernel_pred [B, 169, H, W]``; once: the mask
feature ``[B, 8, H/8, W/8]`` (:class:`MaskFeatModule`).

A kept detection's mask logits: its 169 kernel values are three 1x1 convolutions (10 -> 8 -> 8
-> 1, ReLU between) applied to ``[rel_x, rel_y, mask feature]`` at every stride-8 location, the
relative coordinates being ``(prior - location) / (8 * prior stride)``. The graph gathers the
kernels and priors of the kept detections and applies all of them at once (batched matrix
products); eager runs MMDetection's grouped convolution per image. Both return the stride-8 logits
(``mask_logits``); upsampling x8, the rescale to the original image, the crop and the
``sigmoid > mask_thr_binary`` test are the shared post-processing (:mod:`deploy.postprocess`).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops.multiclass_nms import multiclass_nms
from ...ops.nms import batched_nms
from ...registry import MODELS
from ...spec import DenseMaskSettings, StageSettings
from ..layers import ConvModule
from .rtmdet_head import RTMDetSepBNHead, share_tower_convs


class MaskFeatModule(nn.Module):
    """Levels 1.. upsampled bilinearly to level 0, concatenated, ``fusion_conv`` (1x1, bias),
    ``stacked_convs`` (3x3 ConvModules), ``projection`` (1x1 to ``num_prototypes``)."""

    def __init__(
        self,
        in_channels: int,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        num_levels: int = 3,
        num_prototypes: int = 8,
        act_cfg: dict | None = None,
        norm_cfg: dict | None = None,
    ):
        super().__init__()
        self.num_levels = num_levels
        self.fusion_conv = nn.Conv2d(num_levels * in_channels, in_channels, 1)
        self.stacked_convs = nn.Sequential(
            *(
                ConvModule(
                    in_channels if i == 0 else feat_channels,
                    feat_channels,
                    3,
                    padding=1,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                )
                for i in range(stacked_convs)
            )
        )
        self.projection = nn.Conv2d(feat_channels, num_prototypes, 1)

    def forward(self, feats: tuple[Tensor, ...]) -> Tensor:
        size = feats[0].shape[-2:]
        fused = [feats[0]] + [
            F.interpolate(f, size=size, mode='bilinear', align_corners=False)
            for f in feats[1 : self.num_levels]
        ]
        return self.projection(self.stacked_convs(self.fusion_conv(torch.cat(fused, 1))))


@MODELS.register_module()
class RTMDetInsSepBNHead(RTMDetSepBNHead):
    """Children as in MMDetection: :class:`RTMDetSepBNHead`'s plus ``kernel_convs.{level}.{i}``
    (not shared), ``rtm_kernel.{level}`` and ``mask_head``.

    Args:
        num_prototypes: mask feature channels.
        dyconv_channels: channels of the dynamic convolutions.
        num_dyconvs: dynamic convolution layers.
        mask_loss_stride, loss_mask: training only.
        Other args: see :class:`RTMDetSepBNHead`.
    """

    raw_output_prefixes = ('cls_score', 'bbox_pred', 'kernel_pred')
    settings_type: type[StageSettings] = DenseMaskSettings

    def __init__(
        self,
        *args,
        num_prototypes: int = 8,
        dyconv_channels: int = 8,
        num_dyconvs: int = 3,
        mask_loss_stride: int = 4,
        loss_mask: dict | None = None,
        **kwargs,
    ):
        self.num_prototypes = num_prototypes
        self.dyconv_channels = dyconv_channels
        self.num_dyconvs = num_dyconvs
        self.weight_nums, self.bias_nums = dynamic_param_sizes(
            num_prototypes, dyconv_channels, num_dyconvs
        )
        super().__init__(*args, **kwargs)

    def _init_layers(self, share_conv: bool) -> None:
        levels = len(self.strides)
        self.cls_convs = nn.ModuleList(self._tower() for _ in range(levels))
        self.reg_convs = self.cls_convs  # MMDetection's aliasing: the box branch runs this tower
        self.kernel_convs = nn.ModuleList(self._tower() for _ in range(levels))
        self.rtm_cls = nn.ModuleList(self._predictor(self.num_classes) for _ in range(levels))
        self.rtm_reg = nn.ModuleList(self._predictor(4) for _ in range(levels))
        num_params = sum(self.weight_nums) + sum(self.bias_nums)
        self.rtm_kernel = nn.ModuleList(self._predictor(num_params) for _ in range(levels))
        self.mask_head = MaskFeatModule(
            self.in_channels,
            self.feat_channels,
            stacked_convs=4,
            num_levels=levels,
            num_prototypes=self.num_prototypes,
            act_cfg=self.act_cfg,
            norm_cfg=self.norm_cfg,
        )
        if share_conv:
            share_tower_convs(self.cls_convs)

    def forward(self, feats: tuple[Tensor, ...]) -> tuple:
        """Per level ``cls_scores``, ``bbox_preds``, ``kernel_preds``; and the mask feature."""
        mask_feat = self.mask_head(feats)
        cls_scores, bbox_preds, kernel_preds = [], [], []
        for level, x in enumerate(feats):
            cls_feat, kernel_feat = x, x
            for conv in self.cls_convs[level]:
                cls_feat = conv(cls_feat)
            for conv in self.kernel_convs[level]:
                kernel_feat = conv(kernel_feat)
            cls_scores.append(self.rtm_cls[level](cls_feat))
            # reg_convs is cls_convs: the box tower's output is cls_feat
            bbox_preds.append(F.relu(self.rtm_reg[level](cls_feat)) * self.strides[level])
            kernel_preds.append(self.rtm_kernel[level](kernel_feat))
        return cls_scores, bbox_preds, kernel_preds, mask_feat

    def _flat_priors_and_kernels(self, kernel_preds: list) -> tuple[Tensor, Tensor]:
        """All levels' priors ``[N, 3]`` (x, y, stride) and kernels ``[B, N, 169]``."""
        first = kernel_preds[0]
        sizes = [k.shape[-2:] for k in kernel_preds]
        priors = self.prior_generator.grid_priors(
            sizes, first.dtype, first.device, with_stride=True
        )
        kernels = [self.flatten_level(k, k.shape[1]) for k in kernel_preds]
        return torch.cat([p[:, :3] for p in priors]), torch.cat(kernels, 1)

    # -- eager reference (MMDetection semantics, per image) ----------------------------------
    def predict_by_feat(self, head_outputs: tuple, img_metas: list[dict], cfg=None) -> list[dict]:
        """Per image ``dict(dets [n, 5], labels [n], mask_logits [n, H/8, W/8])``."""
        cfg = self._cfg(cfg)
        cls_scores, bbox_preds, kernel_preds, mask_feat = head_outputs
        priors, kernels = self._flat_priors_and_kernels(kernel_preds)
        outs = [self.level_outputs(c, b) for c, b in zip(cls_scores, bbox_preds)]
        scores_per_level = [o[0] for o in outs]
        distances = torch.cat([o[1] for o in outs], 1)  # [B, N, 4]
        results = []
        for i, meta in enumerate(img_metas):
            cand, labels, level_scores = self._select_single(scores_per_level, i, cfg)
            cand_boxes = self.decode(priors[cand], distances[i, cand], meta['img_shape'][:2])
            wh = cand_boxes[:, 2:] - cand_boxes[:, :2]
            if cfg.min_bbox_size >= 0:
                large = (wh[:, 0] > cfg.min_bbox_size) & (wh[:, 1] > cfg.min_bbox_size)
                cand, labels, level_scores = cand[large], labels[large], level_scores[large]
                cand_boxes = cand_boxes[large]
            keep = batched_nms(cand_boxes, level_scores, labels, cfg.nms.iou_threshold)
            keep = keep[: cfg.max_per_img]
            logits = grouped_dynamic_conv(
                mask_feat[i], kernels[i, cand[keep]], priors[cand[keep]], self.weight_nums,
                self.bias_nums, self.strides[0],
            )  # fmt: skip
            dets = torch.cat([cand_boxes[keep], level_scores[keep, None]], 1)
            results.append(dict(dets=dets, labels=labels[keep], mask_logits=logits))
        return results

    def _select_single(self, level_scores: list, i: int, cfg) -> tuple[Tensor, Tensor, Tensor]:
        """Per level the pairs above ``score_thr``, best ``nms_pre`` -> global prior index,
        label and score of each candidate."""
        cands, labels, scores, offset = [], [], [], 0
        for s in level_scores:
            flat = s[i].reshape(-1)
            valid = torch.nonzero(flat > cfg.score_thr).flatten()
            order = torch.sort(flat[valid], descending=True, stable=True).indices
            pair = valid[order[: cfg.nms_pre] if cfg.nms_pre > 0 else order]
            cands.append(pair // self.num_classes + offset)
            labels.append(pair % self.num_classes)
            scores.append(flat[pair])
            offset += s.shape[1]
        return torch.cat(cands), torch.cat(labels), torch.cat(scores)

    # -- deploy path ---------------------------------------------------------------------------
    def predict_by_feat_deploy(self, head_outputs: tuple, img_shape: Tensor, cfg=None) -> tuple:
        """``dets [B, K, 5]``, ``labels [B, K]`` and ``mask_logits [B, K, H/8, W/8]``."""
        cfg = self._cfg(cfg)
        cls_scores, bbox_preds, kernel_preds, mask_feat = head_outputs
        boxes, scores = self.dense_candidates(cls_scores, bbox_preds, img_shape, cfg)
        dets, labels = multiclass_nms(
            boxes, scores, cfg.boxes_per_class, cfg.nms.iou_threshold, 0.0, cfg.max_per_img
        )
        priors, kernels = self._flat_priors_and_kernels(kernel_preds)
        index = kept_prior_index(boxes, scores, dets, labels)
        kept_kernels = torch.gather(
            kernels, 1, index.unsqueeze(-1).expand(-1, -1, kernels.shape[-1])
        )
        logits = batched_dynamic_conv(
            mask_feat, kept_kernels, priors[index], self.weight_nums, self.bias_nums,
            self.strides[0],
        )  # fmt: skip
        return dets, labels, logits


def dynamic_param_sizes(num_prototypes: int, channels: int, num_layers: int):
    """Weights and biases per dynamic layer: ``(2 + P) * c, c * c, ..., c * 1`` and ``c, .., 1``."""
    weights, biases = [], []
    for i in range(num_layers):
        in_ch = num_prototypes + 2 if i == 0 else channels
        out_ch = 1 if i == num_layers - 1 else channels
        weights.append(in_ch * out_ch)
        biases.append(out_ch)
    return weights, biases


def relative_coords(priors: Tensor, height: int, width: int, mask_stride: int) -> Tensor:
    """``[..., 2, H*W]``: ``(prior - location) / (8 * prior stride)`` for ``priors [..., 3]``
    (x, y, stride) at the mask feature's locations ``(j * s, i * s)``."""
    dtype, device = priors.dtype, priors.device
    xs = torch.arange(width, device=device).to(dtype) * mask_stride
    ys = torch.arange(height, device=device).to(dtype) * mask_stride
    loc_x = xs.reshape(1, -1).expand(height, width).reshape(-1)
    loc_y = ys.reshape(-1, 1).expand(height, width).reshape(-1)
    norm = priors[..., 2:3] * 8
    rel_x = (priors[..., 0:1] - loc_x) / norm
    rel_y = (priors[..., 1:2] - loc_y) / norm
    return torch.stack([rel_x, rel_y], -2)


def split_kernels(kernels: Tensor, weight_nums: list, bias_nums: list):
    """``kernels [..., 169]`` -> per layer ``weight [..., out, in]`` and ``bias [..., out]``."""
    parts = torch.split(kernels, list(weight_nums) + list(bias_nums), dim=-1)
    layers = len(weight_nums)
    weights = [
        w.reshape(*w.shape[:-1], b, n // b)
        for w, n, b in zip(parts[:layers], weight_nums, bias_nums)
    ]
    return weights, list(parts[layers:])


def grouped_dynamic_conv(mask_feat, kernels, priors, weight_nums, bias_nums, mask_stride):
    """MMDetection's per-image path: ``mask_feat [P, H, W]``, ``kernels [n, 169]``,
    ``priors [n, 3]`` -> ``[n, H, W]`` logits with one grouped 1x1 conv per layer."""
    n = kernels.shape[0]
    height, width = mask_feat.shape[-2:]
    if n == 0:
        return mask_feat.new_zeros(0, height, width)
    rel = relative_coords(priors, height, width, mask_stride).reshape(n, 2, height, width)
    x = torch.cat([rel, mask_feat.unsqueeze(0).expand(n, -1, -1, -1)], 1)
    x = x.reshape(1, -1, height, width)
    weights, biases = split_kernels(kernels, weight_nums, bias_nums)
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = F.conv2d(x, w.reshape(-1, w.shape[-1], 1, 1), b.reshape(-1), groups=n)
        if i < len(weights) - 1:
            x = F.relu(x)
    return x.reshape(n, height, width)


def batched_dynamic_conv(mask_feat, kernels, priors, weight_nums, bias_nums, mask_stride):
    """The graph's path: ``mask_feat [B, P, H, W]``, ``kernels [B, K, 169]``, ``priors
    [B, K, 3]`` -> ``[B, K, H, W]`` logits, every instance at once as matrix products."""
    batch, channels, height, width = mask_feat.shape
    rel = relative_coords(priors, height, width, mask_stride)  # [B, K, 2, HW]
    feat = mask_feat.reshape(batch, 1, channels, height * width).expand(-1, rel.shape[1], -1, -1)
    x = torch.cat([rel, feat], 2)  # [B, K, 2 + P, HW]
    weights, biases = split_kernels(kernels, weight_nums, bias_nums)
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = torch.matmul(w, x) + b.unsqueeze(-1)  # [B, K, out, HW]
        if i < len(weights) - 1:
            x = F.relu(x)
    return x.reshape(batch, -1, height, width)


def kept_prior_index(boxes: Tensor, scores: Tensor, dets: Tensor, labels: Tensor) -> Tensor:
    """``[B, K]``: the prior each NMS output row came from, the first one with its box and its
    class score (padding rows: any)."""
    label = labels.clamp(min=0)
    class_scores = torch.gather(scores, 2, label.unsqueeze(1).expand(-1, scores.shape[1], -1))
    same = (class_scores == dets[..., 4].unsqueeze(1)) & (
        (boxes.unsqueeze(2) == dets[..., :4].unsqueeze(1)).all(-1)
    )  # [B, N, K]
    return torch.argmax(same.to(torch.int32), 1)
