"""DINO: keys, MMDetection's 3.x config, the padding masks and valid ratios, the small model's
eager reference against its deploy graph in PyTorch, and batch invariance (opt-in)."""

import pytest
import torch
from conftest import random_batch
from helpers.small_dino import BATCH_INVARIANT, DINO_CFG, SMALL_DINO, batch_inputs, build_small_dino

from deploy.apis.model import init_detector
from deploy.backends.pytorch import PyTorchBackend
from deploy.evaluation.parity import match_result_lists
from deploy.postprocess import outputs_to_results


@pytest.fixture(scope='module')
def small_dino():
    return build_small_dino()


def test_real_config_reads_as_mmdetection_3x(small_dino):
    from deploy.config.loader import get_preprocess_cfg, load_config

    cfg = load_config(DINO_CFG)
    pre = get_preprocess_cfg(cfg)
    assert pre.to_rgb and pre.scale == (1333, 800) and pre.size_divisor is None
    model, _ = init_detector(str(DINO_CFG), logger=None)
    assert model.num_queries == 900 and model.test_cfg.head.max_per_img == 300
    assert len(model.bbox_head.cls_branches) == 7 and len(model.encoder.layers) == 6


def test_levels_of_a_480x640_image_as_mmdetection():
    """800 x 1067 input: levels 100x134, 50x67, 25x34, 13x17 (17821 tokens)."""
    model, _ = init_detector(
        str(DINO_CFG),
        cfg_options={k: v for k, v in SMALL_DINO.items() if 'backbone' in k or 'neck' in k},
        logger=None,
    )
    with torch.no_grad():
        feats = model.eval().extract_feat(torch.zeros(1, 3, 800, 1067))
    assert [tuple(f.shape[-2:]) for f in feats] == [(100, 134), (50, 67), (25, 34), (13, 17)]


def test_eager_equals_deploy_forward_on_a_padded_batch(small_dino):
    img, metas = random_batch([(200, 280), (150, 190)])
    with torch.no_grad():
        ref = small_dino.predict(img, metas)
        dets, labels = small_dino.forward_deploy(
            img, torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
        )
    for i, result in enumerate(ref):
        assert len(result['dets']) == 20
        torch.testing.assert_close(dets[i], result['dets'], rtol=0, atol=1e-4)
        assert torch.equal(labels[i], result['labels'])
        h, w = metas[i]['img_shape']
        assert (dets[i, :, 2] <= w).all() and (dets[i, :, 3] <= h).all()


def _alone(img, metas, i):
    h, w = metas[i]['img_shape']
    return img[i : i + 1, :, :h, :w].contiguous(), metas[i : i + 1]


def test_batch_invariant_image_in_a_padded_batch_equals_the_image_alone():
    model = build_small_dino(**BATCH_INVARIANT)
    backend = PyTorchBackend(model)
    img, metas = random_batch([(90, 150), (150, 120)])
    batched = outputs_to_results(backend(batch_inputs(img, metas)), metas)
    alone = []
    for i in range(2):
        one_img, one_meta = _alone(img, metas, i)
        alone += outputs_to_results(backend(batch_inputs(one_img, one_meta)), one_meta)
    stats = match_result_lists(alone, batched)
    assert stats.matched_fraction == 1.0 and stats.exact_fraction == 1.0, stats
    assert stats.max_score_err < 1e-4 and stats.max_box_err < 1e-2, stats
    # the control: MMDetection's semantics (the default) are not invariant to the padding
    default = PyTorchBackend(build_small_dino())
    batched = outputs_to_results(default(batch_inputs(img, metas)), metas)
    alone = outputs_to_results(default(batch_inputs(*_alone(img, metas, 1))), metas[1:])
    assert match_result_lists(alone, batched[1:]).exact_fraction < 1.0
