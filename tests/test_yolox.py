"""YOLOX: keys and shapes equal MMDetection 3.3.0's, its test pipeline (keep-ratio resize, square
pad with 114, raw pixels), its priors, decoding and score rule, and the export (both exporters,
dynamic batch and size, standard ops) against the eager reference, batch and AP parity included.

Default runs use YOLOX-tiny at small input sizes; the dynamo export is marked slow.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from conftest import random_batch, write_pseudo_ground_truth

from deploy.apis.model import init_detector
from deploy.apis.test import run_test
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.config import load_config
from deploy.config.loader import get_preprocess_cfg
from deploy.datasets.pipeline import TestPipeline
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.models.backbones import Focus
from deploy.models.checkpoint import load_checkpoint, save_checkpoint
from deploy.models.random_weights import make_detections_likely
from deploy.postprocess import outputs_to_results

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((ROOT / 'tests/data/mmdet3_yolox_state_dict_keys.json').read_text())
SIZES = ('tiny', 's', 'm', 'l', 'x')


def config_3x(size: str) -> str:
    return str(ROOT / f'configs/yolox/yolox_{size}_8xb8-300e_coco.py')


def config_2x(size: str) -> str:
    return str(ROOT / f'configs/yolox/yolox_{size}_8x8_300e_coco.py')


# -- the zoo against MMDetection ---------------------------------------------------------------
@pytest.mark.parametrize('size', ['tiny', 's'])
@pytest.mark.parametrize('layout', ['3.x', '2.x'])
def test_state_dict_matches_mmdetection(size, layout):
    """The 2.x config names build the same model: 2.x and 3.x checkpoint keys are equal."""
    model, _ = init_detector(config_3x(size) if layout == '3.x' else config_2x(size), logger=None)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = dict(MANIFEST[f'yolox_{size}_8xb8-300e_coco'])
    assert sorted(set(theirs) ^ set(ours)) == []
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}


#: parameters (millions) of MMDetection's YOLOX model zoo table
PUBLISHED_PARAMS = {'tiny': 5.06, 's': 9.0, 'm': 25.3, 'l': 54.2, 'x': 99.1}


@pytest.mark.parametrize(
    'size',
    [s if s in ('tiny', 's', 'm') else pytest.param(s, marks=pytest.mark.slow) for s in SIZES],
)
def test_sizes_have_the_published_parameter_counts(size):
    for config in (config_3x(size), config_2x(size)):
        model, _ = init_detector(config, logger=None)
        count = sum(p.numel() for p in model.parameters()) / 1e6
        assert round(count, 1 if size != 'tiny' else 2) == PUBLISHED_PARAMS[size], (config, count)


def test_2x_layout_checkpoint_loads_into_both_configs(tmp_path):
    """A checkpoint saved from the 2.x config (``meta.CLASSES``) loads strictly into the 3.x one,
    and both give the same raw outputs."""
    torch.manual_seed(0)
    model_2x, _ = init_detector(config_2x('tiny'), logger=None)
    make_detections_likely(model_2x)
    ckpt = save_checkpoint(model_2x, tmp_path / 'v2.pth', meta={'CLASSES': ('a',) * 80})
    model_3x, _ = init_detector(config_3x('tiny'), logger=None)
    load_checkpoint(model_3x, str(ckpt), logger=None)
    img = torch.rand(1, 3, 96, 128) * 255
    with torch.no_grad():
        for key, value in model_2x.forward_raw(img).items():
            assert torch.equal(value, model_3x.forward_raw(img)[key]), key


@pytest.mark.slow
@pytest.mark.parametrize('size', ['m', 'l', 'x'])
def test_random_checkpoint_is_well_conditioned(size):
    """The random weights of ``random_checkpoint.py`` keep float32 rounding well inside the raw
    tolerance of ``--verify``: float32 eager against float64 on the demo image at 640 (with zero
    BN biases YOLOX-m drifts 1.8x the tolerance, YOLOX-l 8.6x)."""
    from deploy.export.verify import TOLERANCES

    torch.manual_seed(0)
    model, _ = init_detector(config_3x(size), logger=None)
    make_detections_likely(model, strong=True)
    img = TestPipeline(get_preprocess_cfg(load_config(config_3x(size))))(
        cv2.imread(str(ROOT / 'demo' / 'demo.jpg'))
    )[0]
    tol = TOLERANCES['fp32']
    with torch.no_grad():
        single = model.forward_raw(img[None])
        double = model.double().forward_raw(img[None].double())
    for key, ref in double.items():
        ref, err = ref.numpy(), np.abs(single[key].double().numpy() - ref.numpy())
        allowed = tol.raw_rtol * np.abs(ref) + tol.raw_atol * max(1.0, float(np.abs(ref).max()))
        assert float((err / allowed).max()) < 0.3, (key, float((err / allowed).max()))


@pytest.mark.slow
@pytest.mark.parametrize('size,layout', [('m', '3.x'), ('l', '2.x'), ('x', '3.x')])
def test_random_checkpoint_passes_verify(size, layout, tmp_path):
    """``pytorch2onnx.py CFG CKPT --dynamic-export --verify`` on a random checkpoint: raw outputs
    and every detection (the demo image, a second view, a batch of 2)."""
    from conftest import call_tool

    config = config_3x(size) if layout == '3.x' else config_2x(size)
    ckpt = tmp_path / 'random.pth'
    assert call_tool('random_checkpoint.py', config, ckpt, cwd=tmp_path).code == 0
    args = (config, ckpt, '--dynamic-export', '--exporter', 'torchscript', '--verify')
    outcome = call_tool(
        'pytorch2onnx.py', *args, '--output-file', tmp_path / 'm.onnx', cwd=tmp_path
    )
    assert outcome.code == 0 and 'verification passed' in outcome.stdout, outcome.stdout[-3000:]
    assert outcome.stdout.count('PASS') == 3 and '(!)' not in outcome.stdout


# -- pre-processing, priors, decoding, scores ---------------------------------------------------
@pytest.mark.parametrize('config', [config_3x('tiny'), config_2x('tiny')])
def test_pipeline_resizes_keeping_ratio_and_pads_square_with_114(config):
    pre = get_preprocess_cfg(load_config(config))
    assert pre.pad_to_square and pre.pad_value == 114.0 and not pre.to_rgb
    assert pre.mean == (0.0, 0.0, 0.0) and pre.std == (1.0, 1.0, 1.0)
    image = np.full((480, 640, 3), 7, np.uint8)
    tensor, meta = TestPipeline(pre)(image)
    assert meta['img_shape'] == (312, 416) and tuple(tensor.shape) == (3, 416, 416)
    assert float(tensor[:, 311, :416].max()) == 7.0  # raw pixels, BGR, not normalised
    assert float(tensor[:, 312:].min()) == float(tensor[:, 312:].max()) == 114.0


def test_focus_order_is_even_odd_rows_then_columns():
    focus = Focus(1, 4, kernel_size=1)
    focus.conv = torch.nn.Identity()  # what the conv sees
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # (even rows, even cols), (odd rows, even cols), (even rows, odd cols), (odd rows, odd cols)
    assert focus(x)[0, :, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    model, cfg = init_detector(config_3x('tiny'), logger=None)
    make_detections_likely(model)
    return model, cfg


def test_priors_decoding_and_score_rule(tiny):
    head = tiny[0].bbox_head
    priors = head.get_priors([(52, 52), (26, 26), (13, 13)], torch.float32, 'cpu')
    assert sum(len(p) for p in priors) == 3549  # a 416x416 input
    assert priors[1][:2].tolist() == [[0.0, 0.0, 16.0, 16.0], [16.0, 0.0, 16.0, 16.0]]
    box = head.decode(torch.tensor([[32.0, 16.0, 8.0, 8.0]]), torch.tensor([[1.0, -1.0, 0.0, 1.0]]))
    w, h = 8.0, 8.0 * float(np.exp(1.0))
    expected = [40.0 - w / 2, 8.0 - h / 2, 40.0 + w / 2, 8.0 + h / 2]
    assert torch.allclose(box, torch.tensor([expected]))  # unclipped: y1 < 0
    # one prior per level-0 cell; a score exactly at score_thr is kept (>=), below is not
    logits = [torch.full((1, head.num_classes, s, s), -30.0) for s in (4, 2, 1)]
    deltas = [torch.zeros(1, 4, s, s) for s in (4, 2, 1)]
    objectness = [torch.full((1, 1, s, s), 30.0) for s in (4, 2, 1)]
    thr = head.test_cfg.score_thr
    logits[0][0, 3, 0, 0] = float(np.log(thr / (1 - thr)))  # sigmoid == score_thr
    logits[0][0, 5, 0, 0] = logits[0][0, 4, 0, 0] = 2.0  # tie: the first class wins
    logits[0][0, 7, 1, 1] = float(np.log(thr / (1 - thr))) - 1e-3
    scores, labels, _, keep = head._flat_outputs((logits, deltas, objectness), head.test_cfg)
    assert keep[0].nonzero().flatten().tolist() == [0]
    assert labels[0, 0] == 4 and torch.isclose(scores[0, 0], torch.tensor(2.0).sigmoid())
    objectness[0][0, 0, 0, 0] = 0.0  # the product is what is thresholded
    dets = head.predict_by_feat((logits, deltas, objectness), [dict(img_shape=(32, 32))])[0]
    assert dets['labels'].tolist() == [4]
    assert torch.isclose(dets['dets'][0, 4], torch.tensor(2.0).sigmoid() * 0.5)


# -- export ---------------------------------------------------------------------------------------
def _pixels(shapes, seed=0):
    img, metas = random_batch(shapes, seed=seed)
    img = (img * 60 + 114).clamp(0, 255)  # YOLOX's inputs are raw pixels
    for i, (h, w) in enumerate(shapes):
        img[i, :, h:], img[i, :, :, w:] = 114.0, 114.0
    return img, metas


def _compare(model, backend, img, metas):
    inputs = dict(input=img.numpy(), img_shape=np.asarray([m['img_shape'] for m in metas], 'f4'))
    ref = outputs_to_results(PyTorchBackend(model)(inputs), metas)
    test = outputs_to_results(backend(inputs), metas)
    assert all(len(r) > 0 for r in ref), 'the reference must produce detections'
    stats = match_result_lists(ref, test)
    assert stats.matched_fraction >= 0.99 and stats.exact_fraction >= 0.95, stats
    return test


@pytest.mark.parametrize(
    'exporter', [pytest.param('dynamo', marks=pytest.mark.slow), 'torchscript']
)
def test_dynamic_export_matches_eager_and_batches(tiny, exporter, tmp_path):
    model = tiny[0]
    img, metas = _pixels([(192, 256), (160, 224)])
    path = tmp_path / 'yolox.onnx'
    img_shape = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
    export_onnx(model, img, img_shape, path, exporter=exporter, dynamic=True)
    graph = onnx.load(str(path))
    assert {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'}, 'no custom op domains'
    assert 'NonMaxSuppression' in {n.op_type for n in graph.graph.node}
    backend = OnnxRuntimeBackend(path)
    batch = _compare(model, backend, img, metas)
    # each image of the batch gets its batch-1 detections (all inputs are the same size here,
    # as YOLOX's square pad makes them)
    for i in range(2):
        alone = _compare(model, backend, img[i : i + 1], metas[i : i + 1])[0]
        stats = match_result_lists([alone], [batch[i]])
        assert stats.exact_fraction == 1.0 and stats.matched_fraction == 1.0, (i, stats)
    _compare(model, backend, *_pixels([(128, 160)], seed=1))  # another size, batch 1


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('yolox_eval')
    return generate_synthetic_coco(root / 'data', num_train=0, num_val=4, seed=7)


def test_onnxruntime_box_ap_equals_pytorch(val_set, tmp_path):
    """2.x config names, a 2.x-layout checkpoint, AP against the reference's own detections."""
    options = {
        'model.bbox_head.num_classes': len(CATEGORIES),
        'data.test.ann_file': str(val_set['val']),
        'data.test.img_prefix': str(val_set['val_img_prefix']),
        'data.test.pipeline.1.img_scale': (256, 256),
    }
    torch.manual_seed(0)
    model, _ = init_detector(config_2x('tiny'), cfg_options=options, logger=None)
    make_detections_likely(model)
    classes = tuple(c['name'] for c in CATEGORIES)
    ckpt = save_checkpoint(model, tmp_path / 'tiny.pth', meta={'CLASSES': classes})
    onnx_file = tmp_path / 'tiny.onnx'
    img, metas = _pixels([(256, 256), (256, 256)])
    shapes = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
    export_onnx(model, img, shapes, onnx_file, exporter='torchscript', dynamic=True)
    kwargs = dict(
        cfg_options=options,
        metrics=('bbox',),
        batch_size=2,
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    first = run_test(config_2x('tiny'), ckpt, 'pytorch', **kwargs)
    pseudo = write_pseudo_ground_truth(first, val_set['val'], tmp_path / 'pseudo.json')
    kwargs['cfg_options'] = dict(options, **{'data.test.ann_file': str(pseudo)})
    pt = run_test(config_2x('tiny'), ckpt, 'pytorch', **kwargs)
    ort = run_test(config_2x('tiny'), onnx_file, 'onnxruntime', **kwargs)
    assert sum(len(r) for r in pt.results) > 0, 'the reference must detect something'
    assert pt.metrics['bbox_mAP'] > 0.2, pt.metrics
    for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75'):
        assert abs(pt.metrics[key] - ort.metrics[key]) <= 0.001, (key, pt.metrics, ort.metrics)


def test_demo_image_is_square_padded_in_both_layouts():
    """The 3.x (pad_size_divisor 32) and 2.x (none) pipelines give the same input at 416."""
    image = cv2.imread(str(ROOT / 'demo' / 'demo.jpg'))
    a = TestPipeline(get_preprocess_cfg(load_config(config_3x('tiny'))))(image)[0]
    b = TestPipeline(get_preprocess_cfg(load_config(config_2x('tiny'))))(image)[0]
    assert a.shape == b.shape == (3, 416, 416) and torch.equal(a, b)


def test_single_output_channel_convs_stay_float_in_int8():
    """ONNX Runtime 1.32 aborts building a session around a QDQ Conv with one output channel
    (YOLOX's objectness convs): the INT8 plan leaves such convolutions float."""
    from onnx import TensorProto, helper, numpy_helper

    from deploy.onnx_graph.int8 import QuantizeSettings, int8_node_plan

    weights = [
        numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), 'w4'),
        numpy_helper.from_array(np.ones((1, 4, 1, 1), np.float32), 'w1'),
    ]
    graph = helper.make_graph(
        [
            helper.make_node('Conv', ['x', 'w4'], ['y'], name='wide'),
            helper.make_node('Conv', ['y', 'w1'], ['z'], name='objectness'),
        ],
        'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info('z', TensorProto.FLOAT, [1, 1, 8, 8])],
        weights,
    )
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph))
    plan = int8_node_plan(model, QuantizeSettings())
    assert 'wide' in plan.quantize and 'objectness' not in plan.quantize
    assert plan.float_compute == ['objectness']
