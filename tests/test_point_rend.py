"""PointRend: the MMDetection config, the mask subdivision against a slow per-point reference,
and the deploy path against eager.
"""

import math

import numpy as np
import pytest
import torch
from helpers.parity import inputs_of, matched_mask_error
from helpers.small_point_rend import CONFIG, build_small, pixel_batch

from deploy.apis.model import init_detector
from deploy.backends.pytorch import PyTorchBackend, pad_detections
from deploy.errors import ConfigError
from deploy.evaluation.parity import match_result_lists
from deploy.models.random_weights import make_detections_likely
from deploy.postprocess import outputs_to_results
from deploy.spec import PointRendSettings


# --------------------------------------------------------------------------------------------
# MMDetection compatibility
# --------------------------------------------------------------------------------------------
def test_model_follows_the_mmdetection_config():
    """(State-dict keys and shapes: ``tests/test_model_keys.py``.)"""
    model, _ = init_detector(str(CONFIG), logger=None)
    assert model.output_names == ('dets', 'labels', 'masks')
    assert model.roi_head._mask_size() == (224, 224)  # 7 * 2**5
    cfg = model.spec.test_cfg.rcnn
    assert isinstance(cfg, PointRendSettings)
    assert (cfg.subdivision_steps, cfg.subdivision_num_points, cfg.scale_factor) == (5, 784, 2)
    assert model.spec.preprocess.std == (1.0, 1.0, 1.0) and not model.spec.preprocess.to_rgb
    assert model.spec.task == 'instance-segmentation' and model.spec.threshold_on_output_score


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match='did you mean `subdivision_steps`'):
        build_small(**{'model.test_cfg.rcnn.subdivision_stepz': 2})
    with pytest.raises(ConfigError, match='aggregation'):
        build_small(**{'model.roi_head.mask_roi_extractor.aggregation': 'max'})
    with pytest.raises(ConfigError, match='class_agnostic'):
        build_small(**{'model.roi_head.point_head.class_agnostic': True})


# --------------------------------------------------------------------------------------------
# Slow, obviously correct references (float64, one RoI and one point at a time)
# --------------------------------------------------------------------------------------------
def _bilinear(fmap: np.ndarray, x: float, y: float) -> np.ndarray:
    """``fmap [C, H, W]`` at pixel coordinates ``(x, y)`` (pixel centres at integers), zero
    outside the map: what ``grid_sample(align_corners=False)`` computes."""
    _, height, width = fmap.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(fmap.shape[0])
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < height and 0 <= xx < width:
                out += (1 - abs(x - xx)) * (1 - abs(y - yy)) * fmap[:, yy, xx]
    return out


def _upsample(mask: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear ``factor`` x upsampling with half-pixel centres, clamped at the border
    (``F.interpolate(mode='bilinear', align_corners=False)``)."""
    height, width = mask.shape
    out = np.zeros((height * factor, width * factor))
    for oy in range(height * factor):
        sy = max((oy + 0.5) / factor - 0.5, 0.0)
        y0 = int(sy)
        y1, ly = min(y0 + 1, height - 1), sy - y0
        for ox in range(width * factor):
            sx = max((ox + 0.5) / factor - 0.5, 0.0)
            x0 = int(sx)
            x1, lx = min(x0 + 1, width - 1), sx - x0
            top = (1 - lx) * mask[y0, x0] + lx * mask[y0, x1]
            bottom = (1 - lx) * mask[y1, x0] + lx * mask[y1, x1]
            out[oy, ox] = (1 - ly) * top + ly * bottom
    return out


def _point_layers(head) -> list[tuple[np.ndarray, np.ndarray]]:
    """The point head's ``(W, b)`` per layer (the hidden ``Conv1d`` layers, then ``fc_logits``)."""
    convs = [fc.conv for fc in head.fcs] + [head.fc_logits]
    return [
        (c.weight[:, :, 0].detach().double().numpy(), c.bias.detach().double().numpy())
        for c in convs
    ]


def _point_mlp(layers, coarse_each_layer: bool, fine: np.ndarray, coarse: np.ndarray):
    """The point head on one point: ``relu(W x + b)`` per hidden layer, the coarse logits
    appended to every layer's input (``coarse_pred_each_layer``), then the logits layer."""
    x = np.concatenate([fine, coarse])
    for w, b in layers[:-1]:
        x = np.maximum(w @ x + b, 0.0)
        if coarse_each_layer:
            x = np.concatenate([x, coarse])
    w, b = layers[-1]
    return w @ x + b


def reference_simple_roi_align(fmap: np.ndarray, box, size: int, stride: int) -> np.ndarray:
    """One bilinear sample at the centre of each of the ``size x size`` cells of ``box``."""
    x1, y1, x2, y2 = box
    out = np.zeros((fmap.shape[0], size, size))
    for i in range(size):
        for j in range(size):
            px = x1 + (j + 0.5) / size * (x2 - x1)
            py = y1 + (i + 0.5) / size * (y2 - y1)
            out[:, i, j] = _bilinear(fmap, px / stride - 0.5, py / stride - 0.5)
    return out


def reference_refine(head, fmap: np.ndarray, stride: int, box, label: int, coarse: np.ndarray):
    """MMDetection's subdivision for one RoI, point by point (see ``PointRendRoIHead``).

    Args:
        fmap: ``[C, H, W]`` the fine-grained level (P2) of the RoI's image.
        box: ``(x1, y1, x2, y2)`` in input pixels; label: the predicted class.
        coarse: ``[num_classes, h0, w0]`` coarse logits.

    Returns:
        ``[S, S]`` refined logits of ``label``.
    """
    cfg = head.test_cfg
    x1, y1, x2, y2 = box
    coarse_h, coarse_w = coarse.shape[1:]
    layers = _point_layers(head.point_head)
    mask = coarse[label]
    for step in range(cfg.subdivision_steps):
        mask = _upsample(mask, cfg.scale_factor)
        height, width = mask.shape
        enough = cfg.subdivision_num_points >= cfg.scale_factor**2 * height * width
        if enough and step < cfg.subdivision_steps - 1:
            continue
        # The most uncertain cells: smallest |logit| first, ties by position.
        cells = sorted(range(height * width), key=lambda c: (abs(mask.flat[c]), c))
        new = mask.copy()
        for cell in cells[: cfg.subdivision_num_points]:
            y, x = divmod(cell, width)
            u, v = (x + 0.5) / width, (y + 0.5) / height  # in the RoI, [0, 1]
            px, py = x1 + u * (x2 - x1), y1 + v * (y2 - y1)  # in input pixels
            fine = _bilinear(fmap, px / stride - 0.5, py / stride - 0.5)
            coarse_at = _bilinear(coarse, u * coarse_w - 0.5, v * coarse_h - 0.5)
            logits = _point_mlp(layers, head.point_head.coarse_pred_each_layer, fine, coarse_at)
            new[y, x] = logits[label]
        mask = new
    return mask


#: (name, cfg overrides): every branch of a step (skipped, all points, some points, last step)
SUBDIVISION_CASES = {
    # 7x7 -> 14x14 skipped (784 points would cover 28x28) -> all 784 points of 28x28
    'coco steps': {'model.test_cfg.rcnn.subdivision_steps': 2},
    # 7x7 -> 10 of 14x14 -> 10 of 28x28
    'few points': {
        'model.test_cfg.rcnn.subdivision_steps': 2,
        'model.test_cfg.rcnn.subdivision_num_points': 10,
    },
    # a 2x2 coarse mask: 4x4 skipped -> all of 8x8 -> 64 of 16x16 -> 64 of 32x32
    'tiny coarse': {
        'model.roi_head.mask_roi_extractor.roi_layer.output_size': 4,
        'model.roi_head.mask_head.roi_feat_size': 4,
        'model.test_cfg.rcnn.subdivision_steps': 4,
        'model.test_cfg.rcnn.subdivision_num_points': 64,
    },
    # one step, whose points cover the grid: the last step is never skipped
    'last step': {
        'model.roi_head.mask_roi_extractor.roi_layer.output_size': 4,
        'model.roi_head.mask_head.roi_feat_size': 4,
        'model.test_cfg.rcnn.subdivision_steps': 1,
        'model.test_cfg.rcnn.subdivision_num_points': 64,
    },
}
BOXES = [
    (10.3, 20.7, 90.2, 110.5),
    (150.0, 40.0, 190.0, 75.5),
    (-8.0, 100.0, 40.0, 170.0),  # partly outside the image
    (60.0, 60.0, 61.5, 90.0),  # thin
]


@pytest.mark.parametrize('case', sorted(SUBDIVISION_CASES))
def test_subdivision_matches_per_point_reference(case):
    """Pooling, coarse head and every subdivision step against the slow reference, in float64
    (so that the choice of uncertain points never hinges on rounding)."""
    model, _ = build_small(**SUBDIVISION_CASES[case])
    model.double()
    head = model.roi_head
    img, _ = pixel_batch([(160, 224), (128, 192)], seed=3)
    labels = torch.tensor([3, 1, 5, 0])
    with torch.no_grad():
        feats = model.extract_feat(img.double())
        # The boxes on the second image: its RoIs must be sampled from its own maps.
        rois = torch.tensor([(1.0, *box) for box in BOXES], dtype=torch.float64)
        pooled = head.mask_roi_extractor(feats[:1], rois)
        coarse = head.mask_head(pooled)
        refined = head.refine_mask_logits(tuple(f[1:] for f in feats), rois, labels, coarse)
    p2 = feats[0][1].numpy()
    size = head.mask_roi_extractor.output_size[0]
    steps = head.test_cfg.subdivision_steps
    assert refined.shape[1:] == (coarse.shape[2] * 2**steps,) * 2
    for i, (box, label) in enumerate(zip(BOXES, labels.tolist())):
        # The cell centres are MMCV's float32 constants, up to an ulp off (j + 0.5) / size.
        expected_pooled = reference_simple_roi_align(p2, box, size, 4)
        np.testing.assert_allclose(pooled[i].numpy(), expected_pooled, rtol=1e-5, atol=1e-5)
        expected = reference_refine(head, p2, 4, box, label, coarse[i].numpy())
        np.testing.assert_allclose(refined[i].numpy(), expected, rtol=1e-6, atol=1e-7)
        # The refinement changed the upsampled coarse mask (the point head ran).
        assert not np.allclose(expected, _upsample_n(coarse[i, label].numpy(), 2, steps))


def _upsample_n(mask: np.ndarray, factor: int, times: int) -> np.ndarray:
    for _ in range(times):
        mask = _upsample(mask, factor)
    return mask


# --------------------------------------------------------------------------------------------
# Eager prediction and the deploy path (what the exporters trace), in PyTorch
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def eager_run():
    """The small model's eager detections on a batch of two (the same weights for both RoI
    modes: the mode only changes the exported graph)."""
    model, _ = build_small()
    img, metas = pixel_batch([(300, 400), (256, 380)])
    with torch.no_grad():
        feats = model.extract_feat(img)
        proposals = model.rpn_head.predict_proposals(model.rpn_head(feats), metas)
        results = model.roi_head.predict(feats, proposals, metas)
    outputs = pad_detections(results, 100)
    outputs['masks'] = model.pad_masks(results, 100)
    return dict(model=model, img=img, metas=metas, feats=feats, results=results, outputs=outputs)


def test_eager_masks_are_sigmoid_of_the_refined_class_logits(eager_run):
    """``predict`` pools each detection from its own image and returns the sigmoid of its class's
    refined logits (MMDetection's ``get_seg_masks`` input)."""
    head, feats = eager_run['model'].roi_head, eager_run['feats']
    with torch.no_grad():
        for i, r in enumerate(eager_run['results']):
            assert 0 < len(r['labels']) < 100
            assert r['masks'].shape == (len(r['labels']), 56, 56)
            rois = torch.cat([torch.zeros(len(r['dets']), 1), r['dets'][:, :4]], 1)
            image_feats = tuple(f[i : i + 1] for f in feats)
            coarse = head.mask_head(head.mask_roi_extractor(image_feats[:1], rois))
            logits = head.refine_mask_logits(image_feats, rois, r['labels'], coarse)
            torch.testing.assert_close(r['masks'], logits.sigmoid(), rtol=0, atol=0)
            fg = (r['masks'] >= 0.5).float().mean().item()
            assert 0.05 < fg < 0.95, 'random masks should be neither empty nor full'
        empty = head._predict_masks(feats, [dict(dets=torch.zeros(0, 5), labels=torch.zeros(0))])
    assert empty[0]['masks'].shape == (0, 56, 56)


@pytest.mark.parametrize('roi_mode', ['masked', 'nonzero'])
def test_deploy_path_equals_eager(eager_run, roi_mode):
    model, _ = build_small(roi_mode)
    img, metas = eager_run['img'], eager_run['metas']
    eager = eager_run['outputs']
    deploy = PyTorchBackend(model, mode='deploy')(inputs_of(img, metas))
    ref = outputs_to_results(eager, metas)
    test = outputs_to_results(deploy, metas)
    stats = match_result_lists(ref, test)
    assert stats.matched == stats.num_ref == stats.num_test > 0, stats
    assert stats.max_score_err < 1e-6 and stats.max_box_err < 1e-4, stats
    assert deploy['masks'].shape == (2, 100, 56, 56)
    assert np.all(deploy['masks'][deploy['labels'] < 0] == 0), 'padding rows have empty masks'
    assert matched_mask_error(eager, deploy) < 1e-6
    for r, t in zip(ref, test):
        assert r.masks == t.masks  # identical RLEs


def test_random_checkpoint_weights_detect_on_caffe_style_input():
    """The full-size model with random weights (``tools/misc/random_checkpoint.py``) on
    mean-subtracted pixels: spread scores (not saturated at 0 or 1), and coarse masks with an edge
    whose logits are not all near 0 (which would make every pixel a near-tie at 0.5)."""
    torch.manual_seed(0)
    model, _ = init_detector(str(CONFIG), logger=None)
    make_detections_likely(model, strong=True)
    img, metas = pixel_batch([(320, 416)])
    head = model.roi_head
    with torch.no_grad():
        feats = model.extract_feat(img)
        proposals = model.rpn_head.predict_proposals(model.rpn_head(feats), metas)[0]
        scores = proposals[:, 4]
        assert scores.max() < 0.99 and scores.std() > 0.01, 'saturated proposal scores'
        rois = torch.cat([torch.zeros(len(proposals), 1), proposals[:, :4]], 1)
        cls_score, bbox_pred = head._bbox_forward(feats, rois, deploy=False)
        dets = head.bbox_head.predict_single(
            proposals[:, :4], cls_score, bbox_pred, metas[0]['img_shape'], head.test_cfg
        )
        assert len(dets['labels']) > 0 and dets['dets'][:, 4].max() < 0.99
        coarse = head.mask_head(head.mask_roi_extractor(feats[:1], rois[:20]))
        classes = coarse[torch.arange(20), dets['labels'][:1].expand(20)]
        assert ((classes > 0).float().mean(dim=(1, 2)) > 0).all(), 'masks with an edge'
        assert ((classes < 0).float().mean(dim=(1, 2)) > 0).all(), 'masks with an edge'
        assert classes.abs().mean() > 0.5, 'mask logits near 0'
