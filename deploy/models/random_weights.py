"""Random-weight detectors that detect something (and classifiers whose scores differ): for parity
tests and export smoke checks.

Randomly initialised heads score every class about equally (sigmoid(0) = 0.5, or 1/81 after a
softmax), so a random model either detects everything or nothing, and a parity check on it says
little. The biases set here put the scores around each family's ``score_thr`` instead, so the
reference produces some detections but not all: what ``--verify`` needs to be meaningful on a
model nobody has trained. Never use this on a trained model.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

#: class-logit bias of sigmoid heads, per detector type (RetinaNet's is also the default)
SIGMOID_BIAS = {'RetinaNet': -1.5, 'FCOS': -3.6, 'FSAF': -3.2, 'YOLOV3': -3.5, 'RTMDet': -4.0}


@torch.no_grad()
def make_detections_likely(
    model: nn.Module, bias: float | None = None, strong: bool = False
) -> nn.Module:
    """Set the classifier biases of a random-weight ``model`` in place (and return it).

    Args:
        bias: the class-logit bias of a sigmoid head (default per detector type); ignored by
            softmax heads (SSD, the R-CNN heads), which get sharper logits and a background bias.
        strong: R-CNN heads get a much wider logit spread: what full-size models (R50, 1024-d
            RoI features, 80 classes) need to detect anything; the small test models do with
            less.

    DETR ignores both: its queries are spread apart instead (:func:`_detr_detections_likely`);
    CornerNet's heatmaps are calibrated instead (:func:`_corner_detections_likely`).
    """
    from .classifiers import ImageClassifier
    from .dense_heads import (
        CornerHead,
        DETRHead,
        DINOHead,
        FCOSHead,
        RTMDetSepBNHead,
        SSDHead,
        YOLOV3Head,
        YOLOXHead,
    )

    if isinstance(model, ImageClassifier):
        _classifier_logits_spread(model)
        return model
    if isinstance(getattr(model, 'bbox_head', None), DINOHead):
        _dino_detections_likely(model)
        return model
    if isinstance(getattr(model, 'bbox_head', None), DETRHead):
        _detr_detections_likely(model)
        return model
    if hasattr(model, 'roi_head'):
        _unit_scale_input(model)
        _rcnn_detections_likely(model.roi_head.bbox_head, strong)
        if hasattr(model.roi_head, 'point_head'):
            _point_rend_masks_likely(model.roi_head, strong)
        return model
    if isinstance(model.bbox_head, CornerHead):
        _corner_detections_likely(model)
        return model
    head = model.bbox_head
    bias = SIGMOID_BIAS.get(type(model).__name__, -1.5) if bias is None else bias
    if isinstance(head, YOLOV3Head):  # class scores follow 5 box/objectness attributes
        calibrate_batch_norm(model, torch.randn(2, 3, 224, 288))
        for conv in head.convs_pred:
            conv.bias.view(head.num_base_priors, head.num_attrib)[:, 5:] = bias
    elif isinstance(head, YOLOXHead):
        _yolox_detections_likely(model)
    elif isinstance(head, SSDHead):
        # Softmax with background last. Favour it, and spread the logits of the levels after
        # the first (level 0 is L2-normalised x 20, the others are much weaker).
        for i, level in enumerate(head.cls_convs):
            level[-1].weight.mul_(5.0 if i else 0.6)
            level_bias = level[-1].bias.view(-1, head.cls_out_channels)
            level_bias.zero_()
            level_bias[:, -1] = 4.0
    elif isinstance(head, RTMDetSepBNHead):
        _rtmdet_detections_likely(model, bias)
    elif isinstance(head, FCOSHead):  # thresholded before centerness
        head.conv_cls.bias.fill_(bias)
    else:  # RetinaHead and FSAFHead
        head.retina_cls.bias.fill_(bias)
    return model


#: BatchNorm bias of a random YOLOX: the pre-activations of its SiLUs ~ N(1, 1)
SILU_SHIFT = 1.0


def _yolox_detections_likely(model: nn.Module, fraction: float = 0.03) -> None:
    """YOLOX sees raw 0-255 pixels: BN statistics from a photo-like input of that range (head
    towers included) keep the activations in range. With zero BN biases a random conv-BN-SiLU
    stack is chaotic: SiLU's slope varies most around 0, so each layer grows a perturbation
    relative to the signal, and float32 eager alone drifts from float64 by 1.8x (YOLOX-m) and
    8.6x (YOLOX-l) the raw-output tolerance of ``--verify`` on a 640 photo. BN biases of
    :data:`SILU_SHIFT` keep most pre-activations on SiLU's near-linear side, where the next BN
    scales signal and rounding alike: 0.07x, 0.10x and 0.10x (YOLOX-m, -l, -x). Small box
    deltas keep the boxes near their cells (``exp`` of a random delta can overflow); one class
    bias, searched on that input, lets about ``fraction`` of the priors reach ``score_thr`` with
    ``max_c sigmoid(cls) * sigmoid(obj)`` (a fixed bias does not: the logit spread differs
    between model sizes)."""
    head = model.bbox_head
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:  # as calibrate_batch_norm, but through the head's towers too
        norm.bias.fill_(SILU_SHIFT)
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    pixels = (_photo_like_canvas(128)[..., :416, :608] * 60.0 + 114.0).clamp(0.0, 255.0)
    feats = model.extract_feat(pixels)
    head(feats)
    for norm in norms:
        norm.eval()
    for conv_cls, conv_reg, conv_obj in zip(
        head.multi_level_conv_cls, head.multi_level_conv_reg, head.multi_level_conv_obj
    ):
        conv_cls.bias.zero_()
        conv_reg.weight.mul_(0.1)
        conv_reg.bias.zero_()
        conv_obj.bias.zero_()
    cls_scores, _, objectness = head(feats)
    best = torch.cat([x.amax(1).flatten() for x in cls_scores])
    obj = torch.cat([x.flatten() for x in objectness]).sigmoid()
    biases = torch.arange(-40.0, 10.0, 0.25)
    passing = [
        ((best + b).sigmoid() * obj >= head.test_cfg.score_thr).float().mean() for b in biases
    ]
    bias = biases[int(torch.argmin((torch.stack(passing) - fraction).abs()))]
    for conv_cls in head.multi_level_conv_cls:
        conv_cls.bias.fill_(float(bias))


def _rtmdet_detections_likely(model: nn.Module, bias: float) -> None:
    """RTMDet: BatchNorm statistics (head towers included) from a photo-like batch, variances
    floored (random CSPNeXt activations grow stage by stage otherwise, and near-constant
    channels amplify float rounding), class logits with mean ``bias`` and std 0.5 per level on
    that batch (no ties at a saturated 1.0), box distances of about two strides."""
    img = _photo_like_canvas(128)
    head = model.bbox_head
    # RTMDet-Ins thresholds at 0.05, RTMDet at 0.001: the mean logit half a unit above either
    bias = max(bias, math.log(head.test_cfg.score_thr / (1 - head.test_cfg.score_thr)) + 0.5)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:  # the head's towers too: their BN is per level
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    head(model.extract_feat(img))
    for norm in norms:
        norm.eval()
        # channels nearly constant on this batch would amplify float rounding ~1000x
        norm.running_var.clamp_(min=0.1)
    for level, feat in enumerate(model.extract_feat(img)):
        cls_feat = feat
        for conv in head.cls_convs[level]:
            cls_feat = conv(cls_feat)
        inputs = cls_feat.permute(0, 2, 3, 1).reshape(-1, cls_feat.shape[1])
        cls = head.rtm_cls[level]
        logits = cls(cls_feat).permute(0, 2, 3, 1).reshape(-1, cls.out_channels)
        cls.weight.mul_(0.5 / logits.std().clamp(min=1e-6))
        cls.bias.copy_(bias - (inputs @ cls.weight.flatten(1).T).mean(0))
        reg = head.rtm_reg[level]
        reg.weight.mul_(0.05)
        reg.bias.fill_(0.7 if head.exp_on_reg else 2.0)


def _rcnn_detections_likely(heads, strong: bool) -> None:
    """Random R-CNN classifiers score every class near 1/(C+1), below score_thr; sharper logits
    and a background bias give a few classes above it, and fewer than max_per_img detections."""
    # Averaging three random cascade stages flattens the logits: sharpen them more. Full-size
    # heads (1024-d features, COCO's 80 classes) need a wider spread still (``strong``).
    cascade = isinstance(heads, nn.ModuleList)
    if cascade:
        gain, background = (40.0, 0.0) if strong else (8.0, 0.0)
    else:
        gain, background = (20.0, 0.0) if strong else (5.0, 2.0)
    for head in heads if cascade else [heads]:
        head.fc_cls.weight.mul_(gain)
        head.fc_cls.bias.zero_()
        head.fc_cls.bias[-1] = background
        head.fc_reg.weight.mul_(0.1)


def _corner_detections_likely(model: nn.Module) -> None:
    """CornerNet: random embeddings never pair two corners (distance > 0.5) and one class
    dominates each random heatmap, so no top-left corner meets a bottom-right one of its class.
    Zero embeddings pair every two corners; heatmap logits calibrated per class (on a
    photo-like batch, after the BatchNorm statistics) to mean -3, std 0.5 mix the classes; small
    offsets keep corners near their pixels. The head's outputs stay small (std <= 0.5): the
    float32 drift between runtimes after 100 random layers is ~1.5e-4 of an output's spread,
    and ``--verify`` compares raw outputs to 1e-4 absolute near zero."""
    head = model.bbox_head
    img = _photo_like_canvas(4 * 2 ** model.backbone.hourglass_modules[0].depth)
    calibrate_batch_norm(model, img)
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):  # channels a ReLU kept at 0 in this batch
            norm.running_var.clamp_(min=1e-2)
    for branch in (*head.tl_emb, *head.br_emb):
        branch[-1].conv.weight.zero_()
        branch[-1].conv.bias.zero_()
    for branch in (*head.tl_off, *head.br_off):
        branch[-1].conv.weight.mul_(0.01)
        branch[-1].conv.bias.zero_()
    feats = model.extract_feat(img)
    for level, feat in enumerate(feats):
        tl_heat, br_heat = head.forward_single(feat, level)[:2]
        for branch, heat in ((head.tl_heat[level], tl_heat), (head.br_heat[level], br_heat)):
            conv = branch[-1].conv
            mean = heat.mean(dim=(0, 2, 3))
            gain = 0.5 / heat.std(dim=(0, 2, 3)).clamp(min=1e-6)
            conv.weight.mul_(gain[:, None, None, None])
            conv.bias.copy_(-3.0 - gain * (mean - conv.bias))


def _photo_like_canvas(stride: int) -> torch.Tensor:
    """Two ``(4 stride - 1) x (5 stride - 1)`` inputs like CornerNet's: noise with a photo's
    1/f spectrum (octaves of upsampled noise), normalised, inside a zero border (the canvas
    padding). BatchNorm statistics measured on white noise, or on maps too small to have a
    spatial variance, are far off those of photos, and 100 layers multiply the error."""
    gen = torch.Generator().manual_seed(0)
    height, width = 4 * stride - 1, 5 * stride - 1
    img = torch.zeros(2, 3, height, width)
    scale = 2
    while scale <= stride:
        coarse = torch.randn(2, 3, height // scale + 1, width // scale + 1, generator=gen)
        img += F.interpolate(coarse, size=(height, width), mode='bilinear') * scale**0.5
        scale *= 2
    img /= img.std()
    img[:, :, : height // 12] = img[:, :, -height // 12 :] = 0
    img[:, :, :, : width // 10] = 0
    return img


def _detr_detections_likely(model: nn.Module) -> None:
    """Random DETR queries all decode to about the same box and class: their states differ only
    through cross-attention, which random weights spread over the whole image. So the
    cross-attention is made sharper (each query weighs the places it looks at more), and the
    head's linear layers are scaled and shifted on a batch of smooth noise so that boxes spread
    over the image (centres around the middle, sides about 20% of it) and class scores spread
    over the queries, the background class ahead on average: a few queries score high, most
    low. The backbone keeps its initialisation: with all its residual branches switched on, a
    random ResNet-50 turns float rounding into visible output differences between runtimes."""
    for layer in model.decoder.layers:
        in_proj = layer.cross_attn.attn.in_proj_weight  # [3C, C]: query, key, value rows
        in_proj[: 2 * in_proj.shape[1]].mul_(2.0)  # attention logits x4
    # smooth noise: closer to normalised photos than white noise
    img = nn.functional.interpolate(torch.randn(4, 3, 8, 10), size=(128, 160), mode='bilinear')
    feat = model.extract_feat(img)[-1]
    mask = feat.new_zeros((feat.shape[0], *feat.shape[-2:]), dtype=torch.bool)
    hidden = model.forward_transformer(feat, mask)  # [B, Q, C]
    # The queries of one image differ little and share a large image-dependent part: make the
    # head blind to the directions of the image means, so that it reads the query differences.
    image_means = torch.linalg.qr(hidden.mean(1).T).Q  # [C, B], orthonormal
    head = model.bbox_head
    for linear in (head.fc_cls, head.reg_ffn.layers[0][0]):
        linear.weight.sub_(linear.weight @ image_means @ image_means.T)
    hidden = hidden.flatten(0, 1)  # [B * Q, C]
    _spread(
        head.fc_reg,
        head.activate(head.reg_ffn(hidden)),
        std=torch.tensor([1.2, 1.2, 0.5, 0.5]),  # logits of (cx, cy, w, h) before the sigmoid
        mean=torch.tensor([0.0, 0.0, -1.5, -1.5]),
    )
    mean = torch.zeros(head.cls_out_channels)
    if not head.use_sigmoid_cls:
        mean[-1] = 2.0  # background
    _spread(head.fc_cls, hidden, std=torch.full_like(mean, 2.5), mean=mean)


def _dino_detections_likely(model: nn.Module) -> None:
    """DINO always returns ``max_per_img`` detections; random box branches push every box to
    the image border and random class branches score every pair near 0.5. Small box branches
    keep the boxes near their proposals (cells of every level, ``0.05 * 2^l`` wide), wider
    class branches spread the scores. The content queries share one random row: DINO gives the
    selected tokens the rows in the order of their encoder scores, and random encoder scores
    are so dense at the top that float drift between runtimes reorders a few neighbours, which
    would swap their content queries (a near-tie, not an error); with one shared row the
    order does not matter."""
    head = model.bbox_head
    for branch in head.reg_branches:
        branch[-1].weight.mul_(0.1)
        branch[-1].bias.zero_()
    for branch in head.cls_branches:
        branch.weight.mul_(4.0)
    queries = model.query_embedding.weight
    queries.copy_(queries[:1].expand_as(queries))


def _spread(linear: nn.Linear, inputs: torch.Tensor, std: torch.Tensor, mean: torch.Tensor) -> None:
    """Scale and shift ``linear`` so its outputs over ``inputs [N, in]`` have these per-output
    standard deviations and means."""
    out = linear(inputs)
    linear.weight.mul_((std / out.std(0).clamp(min=1e-6))[:, None])
    linear.bias.copy_(mean - (inputs @ linear.weight.T).mean(0))


#: std of 8-bit natural images' pixels, by which pytorch-style pipelines divide
PIXEL_STD = 57.6


def _unit_scale_input(model: nn.Module) -> None:
    """Caffe-style pipelines (std 1) subtract the mean but leave the pixels' spread (~58): a
    random network then sees inputs ~58x larger than a pytorch-style one and every R-CNN score
    saturates to 0 or 1. Scaling the stem conv (no bias, then a frozen BN at its identity) by
    ``std / PIXEL_STD`` gives the rest of the network unit-scale inputs again."""
    spec = getattr(model, 'spec', None)
    std = max(spec.preprocess.std) if spec is not None else PIXEL_STD
    if std < PIXEL_STD / 4:
        stem = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
        stem.weight.mul_(std / PIXEL_STD)


def _point_rend_masks_likely(roi_head, strong: bool) -> None:
    """Random PointRend mask heads predict logits of about +-0.1, so every probability is near
    0.5 and both the uncertain points and the 0.5 threshold hinge on rounding. Spread the coarse
    logits, and let the point head predict its class's coarse logit at the point plus its random
    part, as a trained one roughly does (a random one drifts every refined mask to one side)."""
    roi_head.mask_head.fc_logits.weight.mul_(25.0 if strong else 10.0)
    head = roi_head.point_head
    if head.coarse_pred_each_layer:  # the coarse logits are the last num_classes inputs
        num_classes = head.num_classes
        head.fc_logits.weight[:, -num_classes:, 0] += torch.eye(num_classes)
        head.fc_logits.bias.zero_()


@torch.no_grad()
def _classifier_logits_spread(model: nn.Module, logit_std: float = 3.0) -> None:
    """A random classifier's activations shrink or blow up through its blocks and its logits
    nearly tie (so top-k order is decided by rounding): normalise every BatchNorm on a batch and
    scale the classifier so the logits spread with ``logit_std``."""
    img = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    calibrate_batch_norm(model, img)
    fc = model.head.fc
    logits = fc(model.head.pre_logits(model.extract_feat(img)))
    fc.weight.mul_(logit_std / max(float(logits.std()), 1e-6))
    fc.bias.zero_()


@torch.no_grad()
def calibrate_batch_norm(model: nn.Module, img: torch.Tensor) -> None:
    """Set every BatchNorm's statistics from one batch: random Darknet weights otherwise blow
    activations up to ~1e5 through its 23 residual blocks (all scores 0 or 1)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: exactly this batch's statistics
        norm.train()
    model.extract_feat(img)
    for norm in norms:
        norm.eval()
