"""RTMDet: MMDetection 3.3.0's keys and shapes, the CSPNeXt sizes, the 114-padded test pipeline,
the head's priors and shared convs, and the exported graph against eager (batch parity, standard
ops, TensorRT rules, COCO AP on generated data)."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from conftest import ROOT, write_pseudo_ground_truth
from helpers.small_rtmdet import SMALL_INPUT, build_tiny, export_tiny, small_options, small_val_set

from deploy.apis.model import init_detector
from deploy.apis.test import run_test
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.backends.tensorrt.compat import check_tensorrt_compat
from deploy.backends.tensorrt.profiles import resolve_profiles
from deploy.config import load_config
from deploy.config.loader import get_preprocess_cfg
from deploy.datasets.pipeline import TestPipeline, collate, network_inputs
from deploy.datasets.synthetic import CATEGORIES
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.models.checkpoint import save_checkpoint
from deploy.postprocess import outputs_to_results
from deploy.spec import read_onnx_spec

MANIFEST = json.loads((ROOT / 'tests' / 'data' / 'mmdet3_rtmdet_state_dict_keys.json').read_text())
TINY = 'configs/rtmdet/rtmdet_tiny_8xb32-300e_coco.py'


@pytest.mark.parametrize('size', ['tiny', 's'])
def test_state_dict_matches_mmdetection(size):
    name = f'rtmdet_{size}_8xb32-300e_coco'
    model, _ = init_detector(str(ROOT / 'configs' / 'rtmdet' / f'{name}.py'), logger=None)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == MANIFEST[name]  # same keys, shapes and order


@pytest.mark.parametrize(
    'size,params',  # MMDetection's published parameter counts (millions, as rounded there)
    [('m', '24.71')]
    + [pytest.param(*p, marks=pytest.mark.slow) for p in (('l', '52.3'), ('x', '94.86'))],
)
def test_larger_sizes_build_with_published_sizes(size, params):
    model, _ = init_detector(str(ROOT / f'configs/rtmdet/rtmdet_{size}_8xb32-300e_coco.py'))
    decimals = len(params.split('.')[1])
    assert f'{sum(p.numel() for p in model.parameters()) / 1e6:.{decimals}f}' == params
    assert model.bbox_head.exp_on_reg


def test_test_pipeline_pads_raw_114_and_clips_to_canvas():
    cfg = get_preprocess_cfg(load_config(str(ROOT / TINY)))
    assert cfg.pad_to_size == (640, 640) and cfg.pad_to_size_value == 114.0
    assert cfg.to_rgb is False and cfg.mean == (103.53, 116.28, 123.675)
    image = np.full((300, 400, 3), 7, np.uint8)
    tensor, meta = TestPipeline(cfg)(image)
    assert tuple(tensor.shape) == (3, 640, 640)
    assert meta['img_shape'] == (640, 640)  # MMDetection 3.x's Pad: boxes clip to the canvas
    np.testing.assert_allclose(meta['scale_factor'][:2], [640 / 400, 480 / 300])
    pad = (114 - np.array(cfg.mean)) / np.array(cfg.std)
    np.testing.assert_allclose(tensor[:, -1, -1].numpy(), pad, rtol=1e-6)
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), (7 - np.array(cfg.mean)) / cfg.std, 1e-6)


def test_head_priors_are_cell_corners_and_convs_are_shared():
    model, _ = init_detector(str(ROOT / TINY), logger=None)
    head = model.bbox_head
    priors = head.get_priors([(2, 3), (1, 2), (1, 1)], torch.float32, 'cpu')
    assert priors[0].tolist() == [[0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8]]
    assert priors[1].tolist() == [[0, 0], [16, 0]]
    assert head.cls_convs[2][1].conv is head.cls_convs[0][1].conv
    assert head.reg_convs[1][0].conv is head.reg_convs[0][0].conv
    assert head.cls_convs[1][0].bn is not head.cls_convs[0][0].bn
    feats = model.extract_feat(torch.zeros(1, 3, 320, 320))
    assert [tuple(f.shape[1:]) for f in feats] == [(96, 40, 40), (96, 20, 20), (96, 10, 10)]


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
    return small_val_set(tmp_path_factory.mktemp('rtmdet_data'))


@pytest.fixture(scope='module')
def options(val_set):
    return small_options(val_set)


@pytest.fixture(scope='module')
def tiny(options):
    return build_tiny(TINY, options, seed=1)


@pytest.fixture(scope='module')
def tiny_onnx(tiny, tmp_path_factory):
    return export_tiny(tiny, tmp_path_factory.mktemp('rtmdet') / 'rtmdet_tiny.onnx')


def _images():
    gen = np.random.default_rng(3)
    small = cv_like(gen, 200, 300)
    return [small, cv_like(gen, 310, 180)]


def cv_like(gen, h, w):
    """Smooth random colour image (uint8 BGR), closer to a photo than white noise."""
    coarse = gen.uniform(0, 255, (h // 20 + 2, w // 20 + 2, 3)).astype(np.float32)
    return np.ascontiguousarray(
        torch.nn.functional.interpolate(
            torch.from_numpy(coarse).permute(2, 0, 1)[None], size=(h, w), mode='bilinear'
        )[0]
        .permute(1, 2, 0)
        .numpy()
        .astype(np.uint8)
    )


def test_exported_graph_is_standard_and_tensorrt_compatible(tiny_onnx):
    graph = onnx.load(str(tiny_onnx))
    assert {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'}
    ops = {n.op_type for n in graph.graph.node}
    assert 'NonMaxSuppression' in ops
    assert check_tensorrt_compat(graph) == []
    assert check_tensorrt_compat(graph, {'input': [1, 3, 320, 320], 'img_shape': [1, 2]}) == []
    # what the engine builder checks: the default profile's smallest shapes (32x32)
    profiles = resolve_profiles(graph, read_onnx_spec(graph))
    assert check_tensorrt_compat(graph, {k: list(v.min) for k, v in profiles.items()}) == []


def test_onnxruntime_equals_eager_and_batch_equals_single(tiny, tiny_onnx):
    pipeline = TestPipeline(tiny.spec.preprocess)
    samples = [pipeline(image) for image in _images()]
    img, metas = collate(samples)
    inputs = network_inputs(img, metas)
    ref = outputs_to_results(PyTorchBackend(tiny)(inputs), metas)
    backend = OnnxRuntimeBackend(tiny_onnx)
    batch = outputs_to_results(backend(inputs), metas)
    assert all(len(r) > 20 for r in ref), 'the reference must detect something'
    stats = match_result_lists(ref, batch)
    assert stats.matched_fraction == 1.0 and stats.exact_fraction == 1.0, stats
    assert stats.max_score_err < 1e-4 and stats.max_box_err < 0.01, stats
    for i, sample in enumerate(samples):  # each image of the batch: its batch-1 detections
        one_img, one_metas = collate([sample])
        single = outputs_to_results(backend(network_inputs(one_img, one_metas)), one_metas)[0]
        assert len(single) == len(batch[i])
        np.testing.assert_allclose(single.boxes, batch[i].boxes, atol=1e-3)
        np.testing.assert_array_equal(single.labels, batch[i].labels)


def test_onnxruntime_box_ap_equals_pytorch(tiny, tiny_onnx, options, val_set, tmp_path):
    ckpt = save_checkpoint(
        tiny, tmp_path / 'tiny.pth', meta={'CLASSES': tuple(c['name'] for c in CATEGORIES)}
    )
    kwargs = dict(
        cfg_options=options,
        metrics=('bbox',),
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
    assert sum(len(r) for r in pt.results) > 0, 'the reference must detect something'
    assert pt.metrics['bbox_mAP'] > 0.2, pt.metrics
    for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75'):
        assert abs(pt.metrics[key] - ort.metrics[key]) <= 0.001, (key, pt.metrics, ort.metrics)


def test_preprocess_in_graph_refuses_the_fixed_canvas(tiny):
    from deploy.errors import ExportError
    from deploy.export.onnx_export import ImageModule

    with pytest.raises(ExportError, match=r'Pad\(size=\.\.\.\)'):
        ImageModule(tiny, tiny.spec.preprocess)


def test_resize_larger_than_the_pad_is_one_clear_error():
    from deploy.errors import ImageError

    cfg = dataclasses.replace(get_preprocess_cfg(load_config(str(ROOT / TINY))), scale=(800, 800))
    with pytest.raises(ImageError, match='larger than the Pad size 640x640'):
        TestPipeline(cfg)(np.zeros((100, 100, 3), np.uint8))


def _head_outputs(model, images):
    """Head outputs and ``img_shape [B, 2]`` of ``images`` through ``model``'s pipeline."""
    img, metas = collate([TestPipeline(model.spec.preprocess)(image) for image in images])
    with torch.no_grad():
        outs = model.bbox_head(model.extract_feat(img))
    return img, metas, outs, torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)


def test_deploy_nms_pre_keeps_the_best_pairs_of_all_levels(tiny, tmp_path):
    """``deploy_nms_pre=k`` leaves the best k candidate (prior, class) pairs of all levels, so
    the graph's detections are the uncut ones scoring at least the k-th best pair; -1 is no
    cut. The exported graph does the same as the eager deploy path."""
    head, k = tiny.bbox_head, 12
    img, metas, outs, shapes = _head_outputs(tiny, _images())
    cut_cfg = dataclasses.replace(head.test_cfg, deploy_nms_pre=k)
    with torch.no_grad():
        scores = head.dense_candidates(outs[0], outs[1], shapes, head.test_cfg)[1]
        cut_scores = head.dense_candidates(outs[0], outs[1], shapes, cut_cfg)[1]
        full = head.predict_by_feat_deploy(outs, shapes)
        off = head.predict_by_feat_deploy(
            outs, shapes, dataclasses.replace(cut_cfg, deploy_nms_pre=-1)
        )
        cut = head.predict_by_feat_deploy(outs, shapes, cut_cfg)
    assert all(torch.equal(a, b) for a, b in zip(full, off))
    kth = scores.flatten(1).topk(k).values[:, -1]
    assert (cut_scores > 0).flatten(1).sum(1).tolist() == [k, k]
    for i in range(2):
        assert (cut_scores[i][cut_scores[i] > 0] >= kth[i]).all()
        valid = full[1][i] >= 0
        kept = valid & (full[0][i, :, 4] >= kth[i])
        assert 0 < int(kept.sum()) < int(valid.sum()), 'the cut must bind'
        assert torch.equal(cut[0][i, : int(kept.sum())], full[0][i, kept])
        assert (cut[1][i, int(kept.sum()) :] == -1).all()
    # the graph: exported from the same weights with the cut set in the config
    options = {**SMALL_INPUT, 'model.bbox_head.num_classes': head.num_classes}
    model, _ = init_detector(
        str(ROOT / TINY), cfg_options={**options, 'model.test_cfg.deploy_nms_pre': k}, logger=None
    )
    model.load_state_dict(tiny.state_dict())
    path = tmp_path / 'cut.onnx'
    export_onnx(model, img, shapes, path, exporter='torchscript', dynamic=True)
    got = OnnxRuntimeBackend(path)(network_inputs(img, metas))
    np.testing.assert_array_equal(got['labels'], cut[1].numpy())
    np.testing.assert_allclose(got['dets'], cut[0].numpy(), atol=1e-3)
