"""CornerNet: MMDetection's test pipeline (RandomCenterCropPad in test mode), its decoding
(transcribed below from MMDetection's ``CornerHead.decode_heatmap``) with MMCV's soft-NMS, the
config's flip refusal, and the deploy path against eager on a tiny HourglassNet.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.mmcv_soft_nms import mmcv_batched_soft_nms
from helpers.small_cornernet import CONFIG, build_small, random_images

from deploy.config import get_preprocess_cfg, load_config
from deploy.datasets.pipeline import TestPipeline, collate, normalize
from deploy.errors import ConfigError
from deploy.models.dense_heads.corner_head import CornerHead


@pytest.fixture(scope='module')
def small():
    return build_small()


# --------------------------------------------------------------------------------------------
# the test pipeline
# --------------------------------------------------------------------------------------------
def mmdet_center_crop_pad(img, mean, to_rgb, pad_or=127):
    """MMDetection 2.x ``RandomCenterCropPad._test_aug`` + ``_crop_image_and_paste``."""
    mean = mean[::-1] if to_rgb else mean
    h, w, c = img.shape
    target_h, target_w = h | pad_or, w | pad_or
    center_y, center_x = h // 2, w // 2
    x0, x1 = max(0, center_x - target_w // 2), min(center_x + target_w // 2, w)
    y0, y1 = max(0, center_y - target_h // 2), min(center_y + target_h // 2, h)
    left, right, top, bottom = center_x - x0, x1 - center_x, center_y - y0, y1 - center_y
    cropped_center_y, cropped_center_x = target_h // 2, target_w // 2
    cropped = np.zeros((target_h, target_w, c), dtype=img.dtype)
    for i in range(c):
        cropped[:, :, i] += mean[i]
    y_slice = slice(cropped_center_y - top, cropped_center_y + bottom)
    x_slice = slice(cropped_center_x - left, cropped_center_x + right)
    cropped[y_slice, x_slice, :] = img[y0:y1, x0:x1, :]
    border = [cropped_center_y - top, cropped_center_y + bottom, cropped_center_x - left]
    return cropped, border


@pytest.mark.parametrize('shape', [(442, 298), (480, 640), (127, 128), (1, 511)])
def test_pipeline_equals_mmdetection(shape):
    pre = get_preprocess_cfg(load_config(CONFIG))
    assert pre.resize_factor == 1.0 and pre.to_float32 and pre.size_divisor is None
    image = np.random.default_rng(sum(shape)).integers(0, 255, (*shape, 3), dtype=np.uint8)
    tensor, meta = TestPipeline(pre)(image)
    # MMDetection: to_float32 on load, an identity Resize, RandomCenterCropPad, Normalize
    cropped, border = mmdet_center_crop_pad(image.astype(np.float32), pre.mean, pre.to_rgb)
    expected = normalize(cropped, pre.mean, pre.std, pre.to_rgb).transpose(2, 0, 1)
    np.testing.assert_array_equal(tensor.numpy(), expected)
    assert meta['img_shape'] == shape and meta['pad_shape'] == cropped.shape[:2]
    assert meta['img_offset'] == (border[0], border[2])
    assert np.abs(tensor[:, : border[0]].numpy()).max(initial=0) < 1e-5, 'padding ~ 0'


def test_flip_test_time_augmentation_is_refused():
    cfg = load_config(CONFIG, ['data.test.pipeline.1.flip=True'])
    with pytest.raises(ConfigError, match='flip=False'):
        get_preprocess_cfg(cfg)


def test_training_mode_center_crop_is_refused():
    cfg = load_config(CONFIG, ['data.test.pipeline.1.transforms.1.test_mode=False'])
    with pytest.raises(ConfigError, match='test_mode=True'):
        get_preprocess_cfg(cfg)


# --------------------------------------------------------------------------------------------
# decoding: MMDetection's decode_heatmap, transcribed (one image), then MMCV's soft-NMS
# --------------------------------------------------------------------------------------------
def mmdet_decode_heatmap(tl_heat, br_heat, tl_off, br_off, tl_emb, br_emb, pad_shape, border, k):
    """``CornerHead.decode_heatmap`` of MMDetection 2.x for one image (``torch.topk`` replaced
    by a stable sort: equal scores keep the lower index first, as ONNX TopK does)."""

    def topk(x, n):
        values, index = torch.sort(x, dim=-1, descending=True, stable=True)
        return values[..., :n], index[..., :n]

    def local_maximum(heat):
        return heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).float()

    def gather(feat, ind):  # transpose_and_gather_feat
        feat = feat.permute(0, 2, 3, 1).contiguous().view(feat.size(0), -1, feat.size(1))
        return feat.gather(1, ind.unsqueeze(2).repeat(1, 1, feat.size(2)))

    batch, _, height, width = tl_heat.size()
    inp_h, inp_w = pad_shape
    tl_heat, br_heat = local_maximum(tl_heat), local_maximum(br_heat)
    corners = []
    for heat in (tl_heat, br_heat):
        scores, inds = topk(heat.view(batch, -1), k)
        clses = inds // (height * width)
        inds = inds % (height * width)
        corners.append((scores, inds, clses, inds // width, (inds % width).int().float()))
    (tl_scores, tl_inds, tl_clses, tl_ys, tl_xs), (br_scores, br_inds, br_clses, br_ys, br_xs) = (
        corners
    )
    tl_ys = tl_ys.view(batch, k, 1).repeat(1, 1, k)
    tl_xs = tl_xs.view(batch, k, 1).repeat(1, 1, k)
    br_ys = br_ys.view(batch, 1, k).repeat(1, k, 1)
    br_xs = br_xs.view(batch, 1, k).repeat(1, k, 1)
    tl_off = gather(tl_off, tl_inds).view(batch, k, 1, 2)
    br_off = gather(br_off, br_inds).view(batch, 1, k, 2)
    tl_xs = tl_xs + tl_off[..., 0]
    tl_ys = tl_ys + tl_off[..., 1]
    br_xs = br_xs + br_off[..., 0]
    br_ys = br_ys + br_off[..., 1]
    tl_xs *= inp_w / width
    tl_ys *= inp_h / height
    br_xs *= inp_w / width
    br_ys *= inp_h / height
    x_off, y_off = border[2], border[0]
    tl_xs -= x_off
    tl_ys -= y_off
    br_xs -= x_off
    br_ys -= y_off
    zeros = tl_xs.new_zeros(*tl_xs.size())
    tl_xs = torch.where(tl_xs > 0.0, tl_xs, zeros)
    tl_ys = torch.where(tl_ys > 0.0, tl_ys, zeros)
    br_xs = torch.where(br_xs > 0.0, br_xs, zeros)
    br_ys = torch.where(br_ys > 0.0, br_ys, zeros)
    bboxes = torch.stack((tl_xs, tl_ys, br_xs, br_ys), dim=3)
    tl_emb = gather(tl_emb, tl_inds).view(batch, k, 1)
    br_emb = gather(br_emb, br_inds).view(batch, 1, k)
    dists = torch.abs(tl_emb - br_emb)
    tl_scores = tl_scores.view(batch, k, 1).repeat(1, 1, k)
    br_scores = br_scores.view(batch, 1, k).repeat(1, k, 1)
    scores = (tl_scores + br_scores) / 2
    tl_clses = tl_clses.view(batch, k, 1).repeat(1, 1, k)
    br_clses = br_clses.view(batch, 1, k).repeat(1, k, 1)
    negative = -1 * torch.ones_like(scores)
    scores = torch.where(tl_clses != br_clses, negative, scores)
    scores = torch.where(br_xs <= tl_xs, negative, scores)
    scores = torch.where(br_ys <= tl_ys, negative, scores)
    scores = torch.where(dists > 0.5, negative, scores)
    scores, inds = topk(scores.view(batch, -1), min(1000, k * k))
    bboxes = bboxes.view(batch, -1, 4).gather(1, inds.unsqueeze(2).repeat(1, 1, 4))
    clses = tl_clses.contiguous().view(batch, -1).gather(1, inds)
    return bboxes[0], scores[0], clses[0]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_predict_equals_mmdetection_decode_and_soft_nms(seed):
    head = CornerHead(num_classes=4, in_channels=8, num_feat_levels=1)
    head.test_cfg = head.test_cfg.replace(corner_topk=24)
    gen = torch.Generator().manual_seed(seed)
    height, width, pad_shape, border = 32, 48, (127, 191), (20, 0, 7)
    outputs = [
        torch.randn(1, 4, height, width, generator=gen) * 3,  # heatmap logits
        torch.randn(1, 4, height, width, generator=gen) * 3,
        torch.rand(1, 1, height, width, generator=gen),  # embeddings: some pairs within 0.5
        torch.rand(1, 1, height, width, generator=gen),
        torch.rand(1, 2, height, width, generator=gen),  # offsets
        torch.rand(1, 2, height, width, generator=gen),
    ]
    result = head.predict_by_feat(
        outputs, torch.tensor(pad_shape, dtype=torch.float32), torch.tensor([border[:2]]) * 1.0
    )[0]
    tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off = outputs
    boxes, scores, labels = mmdet_decode_heatmap(
        tl_heat.sigmoid(),
        br_heat.sigmoid(),
        tl_off,
        br_off,
        tl_emb,
        br_emb,
        pad_shape,
        (border[0], 0, border[1]),
        24,
    )
    keep = scores > -0.1
    assert keep.sum() >= 10, 'the reference must have candidates'
    boxes, scores, labels = boxes[keep].numpy(), scores[keep].numpy(), labels[keep].numpy()
    ref_scores, ref_keep = mmcv_batched_soft_nms(
        boxes, scores, labels, iou_threshold=0.5, sigma=0.5, min_score=1e-3, method='gaussian'
    )
    ref_scores, ref_keep = ref_scores[:100], ref_keep[:100]
    np.testing.assert_array_equal(result['dets'][:, :4].numpy(), boxes[ref_keep])
    np.testing.assert_array_equal(result['labels'].numpy(), labels[ref_keep])
    # MMCV's IoU of offset boxes rounds differently: scores agree to float precision
    np.testing.assert_allclose(result['dets'][:, 4].numpy(), ref_scores, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# the small model: eager predict equals its deploy path (what the exporters trace)
# --------------------------------------------------------------------------------------------
def test_deploy_path_equals_eager(small):
    model, cfg = small
    pipeline = TestPipeline(get_preprocess_cfg(cfg))
    img, metas = collate([pipeline(i) for i in random_images()])
    img_shape = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
    with torch.no_grad():
        eager = model.predict(img, metas)
        dets, labels = model.forward_deploy(img, img_shape)
    assert all(len(r['labels']) > 0 for r in eager), 'the reference must detect something'
    for i, result in enumerate(eager):
        n = len(result['labels'])
        assert torch.equal(dets[i, :n], result['dets'])
        assert torch.equal(labels[i, :n], result['labels']) and (labels[i, n:] == -1).all()


def test_random_weights_pair_corners(small):
    """``make_detections_likely`` zeroes the embeddings (so corners pair) and calibrates the
    heatmaps: detections of several classes, not one."""
    model, cfg = small
    pipeline = TestPipeline(get_preprocess_cfg(cfg))
    img, metas = collate([pipeline(i) for i in random_images(seed=5)])
    with torch.no_grad():
        results = model.predict(img, metas)
    labels = torch.cat([r['labels'] for r in results])
    assert len(labels) >= 10 and len(labels.unique()) >= 2
