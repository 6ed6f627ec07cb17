"""FCOS, FSAF, SSD300 and YOLOv3: MMDetection keys, priors and coders, the deploy path against
eager, and FCOS's old checkpoint layout.
"""

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import ROOT, random_batch
from helpers.small_single_stage import (
    BATCH_SHAPES,
    CONFIGS,
    MODELS,
    batch_inputs,
    build_small,
)

from deploy.apis.model import init_detector
from deploy.backends.pytorch import PyTorchBackend
from deploy.evaluation.parity import match_result_lists
from deploy.models.checkpoint import load_checkpoint
from deploy.models.task_utils import (
    MlvlPointGenerator,
    SSDAnchorGenerator,
    YOLOAnchorGenerator,
    YOLOBBoxCoder,
)
from deploy.postprocess import outputs_to_results

MANIFEST = json.loads((ROOT / 'tests' / 'data' / 'mmdet_state_dict_keys.json').read_text())


@pytest.fixture(scope='module', params=MODELS)
def small_model(request):
    return request.param, build_small(request.param)


# -- checkpoint compatibility ------------------------------------------------------------------


@pytest.mark.parametrize('stem', sorted(CONFIGS))
def test_state_dict_matches_mmdetection(stem):
    model, _ = init_detector(str(ROOT / CONFIGS[stem]), logger=None)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: shape for k, shape in MANIFEST[stem]}
    assert sorted(set(theirs) - set(ours)) == [], 'keys MMDetection has and we lack'
    assert sorted(set(ours) - set(theirs)) == [], 'keys we have and MMDetection lacks'
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}, 'shape mismatches'


def test_fcos_old_key_layout_loads_and_predicts_the_same(tmp_path):
    """Checkpoints from before AnchorFreeHead had a version name the predictors ``fcos_cls``,
    ``fcos_reg`` and ``fcos_centerness``; without version metadata they are renamed on load."""
    model = build_small('fcos')
    img, metas = random_batch(BATCH_SHAPES['fcos'], seed=3)
    inputs = batch_inputs(img, metas)
    expected = PyTorchBackend(model)(inputs)
    assert (expected['labels'] >= 0).any()

    new_layout = model.state_dict()
    assert new_layout._metadata['bbox_head']['version'] == 1
    old_names = {
        'conv_cls': 'fcos_cls',
        'conv_reg': 'fcos_reg',
        'conv_centerness': 'fcos_centerness',
    }
    old_layout = OrderedDict()  # a plain dict: no _metadata, as in the old checkpoints
    for key, value in new_layout.items():
        parts = key.split('.')
        if parts[0] == 'bbox_head' and parts[1] in old_names:
            parts[1] = old_names[parts[1]]
        old_layout['.'.join(parts)] = value.clone()
    assert 'bbox_head.fcos_centerness.weight' in old_layout

    fresh = build_small('fcos', seed=1)
    assert not torch.equal(fresh.bbox_head.conv_cls.weight, model.bbox_head.conv_cls.weight)
    info = load_checkpoint(fresh, {'state_dict': old_layout}, strict=True, logger=None)
    assert info['missing'] == [] and info['unexpected'] == []
    got = PyTorchBackend(fresh.eval())(inputs)
    np.testing.assert_array_equal(got['labels'], expected['labels'])
    np.testing.assert_array_equal(got['dets'], expected['dets'])

    # With version metadata (new checkpoints), keys are left alone: old names stay unexpected.
    versioned = OrderedDict(old_layout)
    versioned._metadata = new_layout._metadata
    info = load_checkpoint(build_small('fcos', seed=1), {'state_dict': versioned}, logger=None)
    assert 'bbox_head.fcos_cls.weight' in info['unexpected']


# -- priors and coders -------------------------------------------------------------------------


def test_ssd300_anchors_follow_mmdetection():
    gen = SSDAnchorGenerator(
        strides=[8, 16, 32, 64, 100, 300],
        ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        basesize_ratio_range=(0.15, 0.9),
        input_size=300,
        scale_major=False,
    )
    assert gen.base_sizes == [21, 45, 99, 153, 207, 261]
    assert gen.num_base_priors == [4, 6, 6, 6, 4, 4]
    first = gen.base_anchors[0]
    # (scale 1, ratio 1), (scale sqrt(45/21), ratio 1), then ratios 1/2 and 2, centred at 4
    side = 21 * np.sqrt(45 / 21)
    expected = [
        [4 - 10.5, 4 - 10.5, 4 + 10.5, 4 + 10.5],
        [4 - side / 2, 4 - side / 2, 4 + side / 2, 4 + side / 2],
        [
            4 - 21 * np.sqrt(2) / 2,
            4 - 21 / np.sqrt(2) / 2,
            4 + 21 * np.sqrt(2) / 2,
            4 + 21 / np.sqrt(2) / 2,
        ],
        [
            4 - 21 / np.sqrt(2) / 2,
            4 - 21 * np.sqrt(2) / 2,
            4 + 21 / np.sqrt(2) / 2,
            4 + 21 * np.sqrt(2) / 2,
        ],
    ]
    np.testing.assert_allclose(first.numpy(), expected, atol=1e-4)
    priors = gen.grid_priors([(2, 3)] + [(1, 1)] * 5)
    assert priors[0].shape == (2 * 3 * 4, 4)
    # (y, x, anchor) order: the 4 anchors of cell (0, 1) are shifted by one stride in x
    np.testing.assert_allclose((priors[0][4:8] - priors[0][:4]).numpy(), [[8, 0, 8, 0]] * 4)


def test_yolo_anchors_points_and_coder():
    gen = YOLOAnchorGenerator(strides=[32], base_sizes=[[(116, 90), (30, 61)]])
    priors = gen.grid_priors([(1, 2)])[0]
    np.testing.assert_allclose(
        priors.numpy(),
        [[-42, -29, 74, 61], [1, -14.5, 31, 46.5], [-10, -29, 106, 61], [33, -14.5, 63, 46.5]],
    )
    points = MlvlPointGenerator([8]).grid_priors([(2, 2)])[0]
    np.testing.assert_allclose(points.numpy(), [[4, 4], [12, 4], [4, 12], [12, 12]])

    coder = YOLOBBoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 40.0, 20.0]])
    # offsets through a sigmoid: 0.75 moves the centre by +0.25 stride; exp(log 2) doubles w
    boxes = coder.decode(anchors, torch.tensor([[0.75, 0.5, np.log(2.0), 0.0]]), 16)
    np.testing.assert_allclose(boxes.numpy(), [[-16, 0, 64, 20]], atol=1e-5)
    targets = coder.encode(anchors, boxes, 16)
    np.testing.assert_allclose(targets.numpy(), [[0.75, 0.5, np.log(2.0), 0.0]], atol=1e-5)


# -- post-processing -------------------------------------------------------------------------


def test_deploy_path_equals_eager(small_model):
    """The traceable batched path selects exactly what the per-image reference selects."""
    name, model = small_model
    img, metas = random_batch(BATCH_SHAPES[name])
    inputs = batch_inputs(img, metas)
    ref = outputs_to_results(PyTorchBackend(model)(inputs), metas)
    deploy = outputs_to_results(PyTorchBackend(model, mode='deploy')(inputs), metas)
    assert all(len(r) > 0 for r in ref), 'the reference must produce detections'
    stats = match_result_lists(ref, deploy)
    assert stats.matched == stats.num_ref == stats.num_test, stats
    assert stats.max_score_err < 1e-6 and stats.max_box_err < 1e-3, stats


def test_yolo_objectness_threshold_and_score_factors():
    """YOLOv3: anchors below conf_thr are never candidates; scores are class x objectness."""
    model = build_small('yolo')
    img, metas = random_batch([(192, 256)])
    head = model.bbox_head
    with torch.no_grad():
        (maps,) = head(model.extract_feat(img))
    outputs = [head.level_outputs(m) for m in maps]
    objectness = torch.cat([o[2] for o in outputs], 1)[0]
    conf_thr = float(torch.quantile(objectness, 0.9))  # keep the top 10% of anchors only
    nms = head.test_cfg.nms.replace(max_output_boxes_per_class=1000)
    cfg = head.test_cfg.replace(conf_thr=conf_thr, max_per_img=1000, nms=nms)
    eager = head.predict_by_feat((maps,), metas, cfg=cfg)[0]
    dets, labels = head.predict_by_feat_deploy((maps,), torch.tensor([[192.0, 256.0]]), cfg=cfg)
    assert len(eager['labels']) > 0
    assert int((labels[0] >= 0).sum()) == len(eager['labels'])

    # Every kept score is (class score > score_thr) x (objectness >= conf_thr) of some anchor.
    scores = torch.cat([o[0] for o in outputs], 1)[0]
    products = scores * objectness[:, None]
    allowed = (scores > cfg.score_thr) & (objectness[:, None] >= conf_thr)
    for score, label in zip(eager['dets'][:, 4], eager['labels']):
        close = torch.isclose(products[:, label], score, rtol=0, atol=1e-7)
        assert (close & allowed[:, label]).any()
    # Without the threshold some detections come from anchors below it.
    loose = head.predict_by_feat((maps,), metas, cfg=cfg.replace(conf_thr=-1))[0]
    assert len(loose['labels']) > len(eager['labels'])


def test_retinanet_keeps_per_level_selection():
    """The base head's new hooks are off for RetinaNet-style heads."""
    from deploy.models.dense_heads import FCOSHead, FSAFHead, RetinaHead, SSDHead, YOLOV3Head

    assert not any(h.select_across_levels for h in (RetinaHead, FSAFHead, FCOSHead, SSDHead))
    assert YOLOV3Head.select_across_levels
