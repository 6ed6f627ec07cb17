"""Two-stage detectors: MMDetection keys, eager semantics, and the deploy path against eager."""

import json

import numpy as np
import pytest
import torch
from conftest import ROOT, random_batch
from helpers.parity import inputs_of, matched_mask_error
from helpers.small_two_stage import CONFIGS, build_small

from deploy.apis.model import init_detector
from deploy.backends.pytorch import PyTorchBackend
from deploy.errors import ConfigError
from deploy.evaluation.parity import match_result_lists
from deploy.ops.mask_paste import paste_mask_region, paste_masks
from deploy.ops.nms import batched_nms
from deploy.postprocess import outputs_to_results, paste_masks_to_image

MANIFEST = json.loads((ROOT / 'tests' / 'data' / 'mmdet_state_dict_keys.json').read_text())


# --------------------------------------------------------------------------------------------
# MMDetection compatibility
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('stem', sorted(CONFIGS))
def test_state_dict_matches_mmdetection(stem):
    model, _ = init_detector(str(ROOT / CONFIGS[stem]))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: shape for k, shape in MANIFEST[stem]}
    assert sorted(set(theirs) - set(ours)) == [], 'keys MMDetection has and we lack'
    assert sorted(set(ours) - set(theirs)) == [], 'keys we have and MMDetection lacks'
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}, 'shape mismatches'
    assert model.output_names == (
        ('dets', 'labels', 'masks') if 'mask' in stem else ('dets', 'labels')
    )


def test_bad_roi_mode_is_a_config_error():
    with pytest.raises(ConfigError, match='deploy_mode'):
        build_small('faster_rcnn_r50_fpn_1x_coco', roi_mode='sparse')


# --------------------------------------------------------------------------------------------
# Eager semantics
# --------------------------------------------------------------------------------------------
def test_rpn_nms_is_per_level_and_filters_small_boxes():
    model, _ = build_small('faster_rcnn_r50_fpn_1x_coco')
    rpn = model.rpn_head
    img, metas = random_batch([(256, 320)])
    with torch.no_grad():
        feats = model.extract_feat(img)
        outputs = rpn(feats)
        cfg = rpn.test_cfg.replace(max_per_img=10000)
        proposals = rpn.predict_proposals(outputs, metas, cfg)[0]
        # Brute force: per level top nms_pre, then NMS within each level only.
        expected = []
        priors = rpn.get_priors([c.shape[-2:] for c in outputs[0]], img.dtype, img.device)
        for cls, reg, anchors in zip(*outputs, priors):
            scores = cls[0].permute(1, 2, 0).reshape(-1).sigmoid()
            deltas = reg[0].permute(1, 2, 0).reshape(-1, 4)
            top = torch.sort(scores, descending=True, stable=True).indices[: cfg.nms_pre]
            boxes = rpn.bbox_coder.decode(anchors[top], deltas[top], max_shape=(256, 320))
            wh = boxes[:, 2:] - boxes[:, :2]
            big = (wh > cfg.min_bbox_size).all(1)
            boxes, kept_scores = boxes[big], scores[top][big]
            keep = batched_nms(
                boxes,
                kept_scores,
                torch.zeros(len(boxes), dtype=torch.long),
                cfg.nms.iou_threshold,
            )
            expected.append(torch.cat([boxes[keep], kept_scores[keep, None]], 1))
    expected = torch.cat(expected)
    expected = expected[torch.sort(expected[:, 4], descending=True, stable=True).indices]
    assert len(proposals) == len(expected) > cfg.nms_pre  # more than one level survived
    torch.testing.assert_close(proposals[:, 4], expected[:, 4])


def test_cascade_averages_logits_and_mask_sigmoids():
    """Final scores are softmax(mean of stage logits); masks the mean of stage sigmoids."""
    model, _ = build_small('cascade_mask_rcnn_r50_fpn_1x_coco')
    head = model.roi_head
    img, metas = random_batch([(256, 320)])
    with torch.no_grad():
        feats = model.extract_feat(img)
        proposals = model.rpn_head.predict_proposals(model.rpn_head(feats), metas)
        result = head.predict(feats, proposals, metas)[0]
        assert len(result['labels']) > 0
        rois = torch.cat([torch.zeros(len(proposals[0]), 1), proposals[0][:, :4]], 1)
        logits = []
        for stage in range(3):
            cls, reg = head.bbox_head[stage](head.bbox_roi_extractor[stage](feats[:4], rois))
            logits.append(cls)
            if stage < 2:
                boxes = head.bbox_head[stage].regress_by_class(
                    rois[:, 1:], cls[:, :-1].argmax(1), reg, (256, 320)
                )
                rois = torch.cat([rois[:, :1], boxes], 1)
        expected = head.bbox_head[2].predict_single(
            rois[:, 1:], sum(logits) / 3, reg, (256, 320), head.test_cfg
        )
        torch.testing.assert_close(result['dets'], expected['dets'])
        det_rois = torch.cat([torch.zeros(len(result['dets']), 1), result['dets'][:, :4]], 1)
        sigmoids = []
        for stage in range(3):
            logit = head.mask_head[stage](head.mask_roi_extractor[stage](feats[:4], det_rois))
            sigmoids.append(logit[torch.arange(len(det_rois)), result['labels']].sigmoid())
        torch.testing.assert_close(result['masks'], sum(sigmoids) / 3)


# --------------------------------------------------------------------------------------------
# Deploy path (what the exporters trace) against eager, in PyTorch
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('roi_mode', ['masked', 'nonzero'])
@pytest.mark.parametrize('stem', sorted(CONFIGS))
def test_deploy_path_equals_eager(stem, roi_mode):
    model, _ = build_small(stem, roi_mode)
    img, metas = random_batch([(300, 400), (256, 380)])
    inputs = inputs_of(img, metas)
    eager = PyTorchBackend(model)(inputs)
    deploy = PyTorchBackend(model, mode='deploy')(inputs)
    ref = outputs_to_results(eager, metas)
    test = outputs_to_results(deploy, metas)
    assert all(0 < len(r) < 100 for r in ref), 'detections, and padding rows, in every image'
    stats = match_result_lists(ref, test)
    assert stats.matched == stats.num_ref == stats.num_test, stats
    assert stats.max_score_err < 1e-6 and stats.max_box_err < 1e-4, stats
    if 'mask' in stem:
        assert deploy['masks'].shape == (2, 100, 28, 28)
        assert matched_mask_error(eager, deploy) < 1e-6
        for r, t in zip(ref, test):
            assert r.masks == t.masks  # identical RLEs


# --------------------------------------------------------------------------------------------
# Mask pasting
# --------------------------------------------------------------------------------------------
def _paste_reference(mask: np.ndarray, box, height: int, width: int) -> np.ndarray:
    """Bilinear sampling (zero outside, align_corners=False) at every pixel centre, in float64."""
    m = mask.shape[0]
    x1, y1, x2, y2 = box
    out = np.zeros((height, width))
    for yi in range(height):
        for xi in range(width):
            u = ((xi + 0.5 - x1) / (x2 - x1)) * m - 0.5
            v = ((yi + 0.5 - y1) / (y2 - y1)) * m - 0.5
            u0, v0 = int(np.floor(u)), int(np.floor(v))
            acc = 0.0
            for dv in (0, 1):
                for du in (0, 1):
                    uu, vv = u0 + du, v0 + dv
                    if 0 <= uu < m and 0 <= vv < m:
                        acc += (1 - abs(u - uu)) * (1 - abs(v - vv)) * mask[vv, uu]
            out[yi, xi] = acc
    return out


def test_paste_matches_brute_force_and_region_equals_full_image():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 7, 7, generator=gen)
    boxes = torch.tensor(
        [
            [3.2, 4.7, 20.1, 15.3],
            [-5.0, 10.0, 12.0, 40.0],
            [25.5, 2.0, 38.0, 9.5],
            [10.0, 10.0, 10.5, 30.0],
        ]
    )
    height, width = 32, 36
    full = paste_masks(masks, boxes, height, width)
    for mask, box, pasted in zip(masks, boxes, full):
        ref = _paste_reference(mask.double().numpy(), box.tolist(), height, width)
        np.testing.assert_allclose(pasted.numpy(), ref, atol=1e-5)
        region, (y0, y1, x0, x1) = paste_mask_region(mask, box, height, width)
        torch.testing.assert_close(region, pasted[y0:y1, x0:x1])
        outside = pasted.clone()
        outside[y0:y1, x0:x1] = 0
        assert outside.max() < 0.5  # the window holds every pixel that can pass 0.5
    bitmaps = paste_masks_to_image(masks.numpy(), boxes.numpy(), (height, width), 0.5, 'bitmap')
    np.testing.assert_array_equal(bitmaps, (full >= 0.5).numpy())
    from pycocotools import mask as mask_utils

    rles = paste_masks_to_image(masks.numpy(), boxes.numpy(), (height, width), 0.5, 'rle')
    decoded = np.stack([mask_utils.decode(r) for r in rles]).astype(bool)
    np.testing.assert_array_equal(decoded, bitmaps)


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_paste_masks_exports(tmp_path, exporter):
    import onnxruntime as ort

    class Paste(torch.nn.Module):
        def forward(self, masks, boxes):
            return paste_masks(masks, boxes, 24, 30)

    masks, boxes = torch.rand(3, 7, 7), torch.tensor([[2.0, 3.0, 20.0, 15.0]] * 3)
    boxes[1] += 4.3
    path = tmp_path / 'paste.onnx'
    kwargs = dict(input_names=['masks', 'boxes'], output_names=['out'], opset_version=16)
    if exporter == 'dynamo':
        n = torch.export.Dim('n', min=2, max=100)
        torch.onnx.export(
            Paste(),
            (masks, boxes),
            str(path),
            dynamo=True,
            external_data=False,
            dynamic_shapes={'masks': {0: n}, 'boxes': {0: n}},
            **kwargs,
        )
    else:
        torch.onnx.export(
            Paste(),
            (masks, boxes),
            str(path),
            dynamo=False,
            dynamic_axes={'masks': {0: 'n'}, 'boxes': {0: 'n'}},
            **kwargs,
        )
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    (out,) = session.run(None, {'masks': masks.numpy(), 'boxes': boxes.numpy()})
    np.testing.assert_allclose(out, paste_masks(masks, boxes, 24, 30).numpy(), atol=1e-5)
