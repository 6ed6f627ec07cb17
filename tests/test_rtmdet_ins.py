"""RTMDet-Ins: MMDetection 3.3.0's keys and shapes, the aliased box tower, the dynamic-kernel
mask path against a per-instance loop written here, and the exported graph against eager (boxes
and masks, batch parity, standard ops, TensorRT rules, box and mask AP on generated data)."""

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, write_pseudo_ground_truth
from helpers.small_rtmdet import build_tiny, export_tiny, small_options, small_val_set

from deploy.apis.model import init_detector
from deploy.apis.test import run_test
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.backends.tensorrt.compat import check_tensorrt_compat
from deploy.backends.tensorrt.profiles import resolve_profiles
from deploy.datasets.pipeline import TestPipeline, collate, network_inputs
from deploy.datasets.synthetic import CATEGORIES
from deploy.evaluation.parity import match_result_lists
from deploy.models.checkpoint import save_checkpoint
from deploy.models.dense_heads.rtmdet_ins_head import (
    batched_dynamic_conv,
    dynamic_param_sizes,
    grouped_dynamic_conv,
)
from deploy.postprocess import outputs_to_results
from deploy.spec import read_onnx_spec

MANIFEST = json.loads((ROOT / 'tests' / 'data' / 'mmdet3_rtmdet_state_dict_keys.json').read_text())
TINY = 'configs/rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py'


@pytest.mark.parametrize('size', ['tiny', 's'])
def test_state_dict_matches_mmdetection(size):
    name = f'rtmdet-ins_{size}_8xb32-300e_coco'
    model, _ = init_detector(str(ROOT / 'configs' / 'rtmdet' / f'{name}.py'), logger=None)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == MANIFEST[name]
    head = model.bbox_head
    assert head.reg_convs is head.cls_convs  # the box branch runs the class tower
    assert head.kernel_convs[1][0].conv is not head.kernel_convs[0][0].conv
    assert model.spec.task == 'instance-segmentation'
    assert model.spec.test_cfg.head.mask_thr_binary == 0.5


@pytest.mark.parametrize(
    'name,params',  # MMDetection's published parameter counts (millions)
    [
        pytest.param('rtmdet-ins_m_8xb32-300e_coco', '27.58', marks=pytest.mark.slow),
        pytest.param('rtmdet-ins_l_8xb32-300e_coco', '57.37', marks=pytest.mark.slow),
        pytest.param('rtmdet-ins_x_8xb16-300e_coco', '102.7', marks=pytest.mark.slow),
    ],
)
def test_larger_sizes_build_with_published_sizes(name, params):
    model, _ = init_detector(str(ROOT / 'configs' / 'rtmdet' / f'{name}.py'), logger=None)
    decimals = len(params.split('.')[1])
    assert f'{sum(p.numel() for p in model.parameters()) / 1e6:.{decimals}f}' == params


def loop_reference(mask_feat, kernels, priors, mask_stride=8):
    """One instance at a time, every step spelled out: the 169 values are 80 + 64 + 8 weights
    ([out][in]) and 8 + 8 + 1 biases; inputs are (prior - location) / (8 * stride) for x and y,
    then the 8 mask-feature channels; 1x1 convs with ReLU between."""
    channels, h, w = mask_feat.shape
    ys, xs = torch.meshgrid(
        torch.arange(h) * mask_stride, torch.arange(w) * mask_stride, indexing='ij'
    )
    out = []
    for kernel, (px, py, stride) in zip(kernels, priors.tolist()):
        rel = torch.stack([(px - xs) / (stride * 8), (py - ys) / (stride * 8)]).float()
        x = torch.cat([rel, mask_feat])[None]
        w1, w2, w3 = kernel[:80].reshape(8, 10), kernel[80:144].reshape(8, 8), kernel[144:152]
        b1, b2, b3 = kernel[152:160], kernel[160:168], kernel[168:169]
        x = F.relu(F.conv2d(x, w1[:, :, None, None], b1))
        x = F.relu(F.conv2d(x, w2[:, :, None, None], b2))
        out.append(F.conv2d(x, w3.reshape(1, 8, 1, 1), b3)[0, 0])
    return torch.stack(out)


def test_dynamic_kernels_match_a_per_instance_loop():
    gen = torch.Generator().manual_seed(0)
    weight_nums, bias_nums = dynamic_param_sizes(8, 8, 3)
    assert (weight_nums, bias_nums) == ([80, 64, 8], [8, 8, 1])
    mask_feat = torch.randn(2, 8, 12, 10, generator=gen)
    kernels = torch.randn(2, 5, 169, generator=gen) * 0.5
    xy = torch.randint(0, 80, (2, 5, 2), generator=gen).float()
    strides = torch.tensor([8.0, 16.0, 32.0])[torch.randint(0, 3, (2, 5), generator=gen)]
    priors = torch.cat([xy, strides[..., None]], -1)
    batched = batched_dynamic_conv(mask_feat, kernels, priors, weight_nums, bias_nums, 8)
    assert batched.shape == (2, 5, 12, 10)
    for b in range(2):
        expected = loop_reference(mask_feat[b], kernels[b], priors[b])
        assert (expected > 0).any() and (expected < 0).any()
        torch.testing.assert_close(batched[b], expected, rtol=1e-5, atol=1e-5)
        grouped = grouped_dynamic_conv(
            mask_feat[b], kernels[b], priors[b], weight_nums, bias_nums, 8
        )
        torch.testing.assert_close(grouped, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
    return small_val_set(tmp_path_factory.mktemp('rtmdet_ins_data'))


@pytest.fixture(scope='module')
def options(val_set):
    return small_options(val_set)


@pytest.fixture(scope='module')
def tiny(options):
    return build_tiny(TINY, options, seed=2)


@pytest.fixture(scope='module')
def tiny_onnx(tiny, tmp_path_factory):
    return export_tiny(tiny, tmp_path_factory.mktemp('rtmdet_ins') / 'rtmdet_ins_tiny.onnx')


def test_graph_is_standard_and_tensorrt_compatible(tiny_onnx):
    graph = onnx.load(str(tiny_onnx))
    assert {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'}
    assert [o.name for o in graph.graph.output] == ['dets', 'labels', 'mask_logits']
    dims = graph.graph.output[2].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ['batch', 'num_dets', 'mask_height', 'mask_width']
    assert check_tensorrt_compat(graph) == []
    assert check_tensorrt_compat(graph, {'input': [1, 3, 320, 320], 'img_shape': [1, 2]}) == []
    # what the engine builder checks: the default profile's smallest shapes (32x32)
    profiles = resolve_profiles(graph, read_onnx_spec(graph))
    assert check_tensorrt_compat(graph, {k: list(v.min) for k, v in profiles.items()}) == []


def test_onnxruntime_masks_equal_eager_and_batch_equals_single(tiny, tiny_onnx, val_set):
    pipeline = TestPipeline(tiny.spec.preprocess)
    images = sorted(val_set['val_img_prefix'].iterdir())[:2]
    samples = [pipeline(path) for path in images]
    img, metas = collate(samples)
    inputs = network_inputs(img, metas)
    ref = outputs_to_results(PyTorchBackend(tiny)(inputs), metas, mask_format='bitmap')
    backend = OnnxRuntimeBackend(tiny_onnx)
    batch = outputs_to_results(backend(inputs), metas, mask_format='bitmap')
    assert all(len(r) > 5 for r in ref), 'the reference must detect something'
    assert all(0.05 < r.masks.mean() < 0.95 for r in ref), 'masks neither empty nor full'
    stats = match_result_lists(ref, batch)
    assert stats.matched_fraction == 1.0 and stats.exact_fraction == 1.0, stats
    assert stats.min_mask_iou >= 0.99, stats
    for i, sample in enumerate(samples):
        one_img, one_metas = collate([sample])
        single = outputs_to_results(backend(network_inputs(one_img, one_metas)), one_metas)[0]
        assert len(single) == len(batch[i])
        np.testing.assert_allclose(single.boxes, batch[i].boxes, atol=1e-3)
        single_bitmaps = outputs_to_results(
            backend(network_inputs(one_img, one_metas)), one_metas, mask_format='bitmap'
        )[0].masks
        assert (single_bitmaps != batch[i].masks).mean() < 1e-3


def test_onnxruntime_box_and_mask_ap_equal_pytorch(tiny, tiny_onnx, options, val_set, tmp_path):
    ckpt = save_checkpoint(
        tiny, tmp_path / 'tiny.pth', meta={'CLASSES': tuple(c['name'] for c in CATEGORIES)}
    )
    kwargs = dict(
        cfg_options=options,
        metrics=('bbox', 'segm'),
        batch_size=2,
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    config = str(ROOT / TINY)
    first = run_test(config, ckpt, 'pytorch', **kwargs)
    pseudo = write_pseudo_ground_truth(first, val_set['val'], tmp_path / 'pseudo.json')
    kwargs['cfg_options'] = dict(options, **{'test_dataloader.dataset.ann_file': str(pseudo)})
    pt = run_test(config, ckpt, 'pytorch', **kwargs)
    ort = run_test(config, tiny_onnx, 'onnxruntime', **kwargs)
    assert pt.metrics['bbox_mAP'] > 0.2 and pt.metrics['segm_mAP'] > 0.2, pt.metrics
    for key in ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50'):
        assert abs(pt.metrics[key] - ort.metrics[key]) <= 0.001, (key, pt.metrics, ort.metrics)


def test_deploy_nms_pre_keeps_the_best_pairs_and_their_masks(tiny, val_set):
    """``deploy_nms_pre=k`` (the deploy path the graph is traced from): the detections are the
    uncut ones scoring at least the k-th best candidate pair, each with its uncut mask logits;
    -1 is no cut."""
    import dataclasses

    head, k = tiny.bbox_head, 40
    images = sorted(val_set['val_img_prefix'].iterdir())[:2]
    img, metas = collate([TestPipeline(tiny.spec.preprocess)(path) for path in images])
    shapes = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
    with torch.no_grad():
        outs = head(tiny.extract_feat(img))
        scores = head.dense_candidates(outs[0], outs[1], shapes, head.test_cfg)[1]
        cut_cfg = dataclasses.replace(head.test_cfg, deploy_nms_pre=k)
        full = head.predict_by_feat_deploy(outs, shapes)
        off = head.predict_by_feat_deploy(
            outs, shapes, dataclasses.replace(cut_cfg, deploy_nms_pre=-1)
        )
        cut = head.predict_by_feat_deploy(outs, shapes, cut_cfg)
    assert all(torch.equal(a, b) for a, b in zip(full, off))
    kth = scores.flatten(1).topk(k).values[:, -1]
    for i in range(2):
        valid = full[1][i] >= 0
        kept = valid & (full[0][i, :, 4] >= kth[i])
        n = int(kept.sum())
        assert 0 < n < int(valid.sum()), 'the cut must bind'
        assert torch.equal(cut[0][i, :n], full[0][i, kept]) and (cut[1][i, n:] == -1).all()
        torch.testing.assert_close(cut[2][i, :n], full[2][i, kept], rtol=0, atol=1e-5)
