"""DETR in the zoo: MMDetection's keys in both layouts, the 2.x <-> 3.x key map and config
translation, the padding mask, and the head's post-processing semantics.
"""

import importlib.util
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import ROOT, random_batch
from helpers.small_detr import (
    DETR_CFG,
    NUM_CLASSES,
    batch_inputs,
    build_small,
)

from deploy.apis.model import init_detector
from deploy.backends.pytorch import PyTorchBackend
from deploy.errors import ConfigError
from deploy.evaluation.parity import match_result_lists
from deploy.models.checkpoint import load_checkpoint, load_checkpoint_file, save_checkpoint
from deploy.models.dense_heads import DETRHead
from deploy.models.detectors.detr import padding_mask_deploy, padding_mask_eager
from deploy.models.detectors.detr_compat import (
    detr_keys_2x_to_3x,
    detr_keys_3x_to_2x,
    upgrade_v1_keys,
)
from deploy.models.layers.detr_transformer import SinePositionalEncoding
from deploy.postprocess import outputs_to_results

DETR_3X_CFG = ROOT / 'tests' / 'data' / 'configs' / 'detr_r50_3x.py'
MANIFEST = json.loads((ROOT / 'tests' / 'data' / 'mmdet_state_dict_keys.json').read_text())
KEYS_2X = MANIFEST['detr_r50_8x2_150e_coco']
KEYS_3X = MANIFEST['detr_r50_8x2_150e_coco@3.x']

_ATTN_3X = dict(embed_dims=32, num_heads=4, dropout=0.1, batch_first=True)
_FFN_3X = dict(embed_dims=32, feedforward_channels=64, num_fcs=2, ffn_drop=0.1)
#: the same small model in the 3.x layout (tests/data/configs/detr_r50_3x.py)
SMALL_DETR_3X = {
    'model.backbone.depth': 18,
    'model.backbone.base_channels': 16,
    'model.neck.in_channels': [128],
    'model.neck.out_channels': 32,
    'model.num_queries': 20,
    'model.encoder.num_layers': 1,
    'model.encoder.layer_cfg': dict(self_attn_cfg=_ATTN_3X, ffn_cfg=_FFN_3X),
    'model.decoder.num_layers': 2,
    'model.decoder.layer_cfg': dict(
        self_attn_cfg=_ATTN_3X, cross_attn_cfg=_ATTN_3X, ffn_cfg=_FFN_3X
    ),
    'model.positional_encoding.num_feats': 16,
    'model.bbox_head.num_classes': NUM_CLASSES,
    'model.bbox_head.embed_dims': 32,
    'model.test_cfg.max_per_img': 10,
}


@pytest.fixture(scope='module')
def small_detr():
    return build_small()


# --------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------
def _shapes(model) -> dict:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def test_3x_config_builds_the_same_model_as_the_2x_config():
    model_2x, _ = init_detector(str(DETR_CFG), logger=None)
    model_3x, _ = init_detector(str(DETR_3X_CFG), logger=None)
    assert _shapes(model_3x) == _shapes(model_2x) == {k: s for k, s in KEYS_3X}
    assert list(model_2x.state_dict()) == [k for k, _ in KEYS_3X], 'MMDetection 3.x key order'


def test_key_map_sends_the_2x_manifest_to_the_3x_manifest_and_back():
    keys_2x = OrderedDict((k, tuple(s)) for k, s in KEYS_2X)
    keys_3x = OrderedDict((k, tuple(s)) for k, s in KEYS_3X)
    mapped = detr_keys_2x_to_3x(keys_2x)
    assert dict(mapped) == dict(keys_3x)  # every key, with its shape
    assert dict(detr_keys_3x_to_2x(keys_3x)) == dict(keys_2x)
    assert list(detr_keys_3x_to_2x(mapped)) == list(keys_2x)  # round trip, order kept
    assert detr_keys_2x_to_3x(keys_3x) == keys_3x  # 3.x keys pass unchanged
    assert sum(a != b for a, b in zip(keys_2x, mapped)) == 185  # mmdet_models.md section 2.13


def _v1_names(state_dict):
    """A 2.x state dict renamed to the pre-2.12 names (the inverse of MMDetection's upgrade)."""
    renames = (
        ('.attentions.0.', '.self_attn.'),
        ('.attentions.1.', '.multihead_attn.'),
        ('.ffns.0.', '.ffn.'),
        ('.decoder.post_norm.', '.decoder.norm.'),
    )
    result = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('bbox_head.transformer.'):
            for new, old in renames:
                key = key.replace(new, old)
        result[key] = value
    return result


@pytest.mark.parametrize('layout', ['3.x', '2.x', '2.x before 2.12'])
def test_checkpoint_layouts_load_into_the_zoo_model(layout, small_detr, tmp_path):
    source = small_detr
    state = source.state_dict()
    if layout != '3.x':
        state = detr_keys_3x_to_2x(state)
        assert any(k.startswith('bbox_head.transformer.encoder.') for k in state)
    if layout == '2.x before 2.12':
        state = _v1_names(state)  # and no module versions, as in checkpoints of 2020
        assert list(upgrade_v1_keys(state)) == list(detr_keys_3x_to_2x(source.state_dict()))
    path = save_checkpoint(state, tmp_path / 'detr.pth', meta={'CLASSES': tuple('abcdef')})
    target = build_small(seed=2, likely=False)
    info = load_checkpoint(target, path, strict=True, logger=None)
    assert info['missing'] == info['unexpected'] == info['mismatched'] == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_convert_tool_writes_either_layout(small_detr, tmp_path):
    spec = importlib.util.spec_from_file_location(
        'convert_detr_checkpoint', ROOT / 'tools' / 'misc' / 'convert_detr_checkpoint.py'
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    source = save_checkpoint(small_detr, tmp_path / '3x.pth', meta={'CLASSES': tuple('abcdef')})
    assert tool.main([str(source), str(tmp_path / '2x.pth'), '--to', '2.x']) == 0
    layout_2x = load_checkpoint_file(tmp_path / '2x.pth')
    assert list(layout_2x['state_dict']) == list(detr_keys_3x_to_2x(small_detr.state_dict()))
    assert layout_2x['class_names'] == tuple('abcdef')
    assert tool.main([str(tmp_path / '2x.pth'), str(tmp_path / 'back.pth'), '--to', '3.x']) == 0
    back = load_checkpoint_file(tmp_path / 'back.pth')['state_dict']
    assert list(back) == list(small_detr.state_dict())
    assert all(torch.equal(back[k], v) for k, v in small_detr.state_dict().items())


def test_2x_config_rejects_what_detr_does_not_build():
    pre_norm = ('norm', 'self_attn', 'norm', 'ffn')
    with pytest.raises(ConfigError, match='post-norm'):
        build_small(
            likely=False,
            **{'model.bbox_head.transformer.encoder.transformerlayers.operation_order': pre_norm},
        )
    with pytest.raises(ConfigError, match='mixes layouts'):
        build_small(**{'model.neck': dict(type='ChannelMapper', in_channels=[128])})
    with pytest.raises(ConfigError, match="'Transformer'"):
        build_small(**{'model.bbox_head.transformer.type': 'DeformableDetrTransformer'})


# the padding mask and the positional encoding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize('axis', [0, 1])
def test_deploy_mask_equals_mmdetection_interpolated_mask(axis):
    """Padded lengths 1..700 along one axis (the other one short), each with a spread of real
    lengths: the float32 arithmetic of the deploy mask reproduces F.interpolate's nearest
    source index exactly (ONNX Resize's own formula differs for about 1 in 11 lengths)."""
    for padded in range(1, 701):
        other = 1 + padded % 7
        real = sorted({1, padded - 1, padded, *range(1, padded, 29)} - {0})
        sizes = [(r, 1 + (r * 7) % other) for r in real]  # (length along axis, other length)
        shape = (padded, other)
        if axis == 1:
            sizes, shape = [s[::-1] for s in sizes], shape[::-1]
        metas = [dict(img_shape=s) for s in sizes]
        img_shape = torch.tensor(sizes, dtype=torch.float32)
        feat_shape = tuple(-(-n // 32) for n in shape)  # ResNet's C5: ceil(n / 32)
        img = torch.empty(len(sizes), 1, *shape)
        feat = torch.empty(len(sizes), 1, *feat_shape)
        expected = padding_mask_eager(metas, shape, feat_shape, 'cpu')
        assert torch.equal(padding_mask_deploy(img_shape, img, feat), expected), shape


def test_positional_encoding_of_real_cells_ignores_padding():
    encoding = SinePositionalEncoding(num_feats=8, normalize=True)
    alone = encoding(torch.zeros(1, 5, 7, dtype=torch.bool))
    padded_mask = torch.ones(1, 9, 12, dtype=torch.bool)
    padded_mask[:, :5, :7] = False
    padded = encoding(padded_mask)
    torch.testing.assert_close(padded[..., :5, :7], alone, rtol=0, atol=1e-6)
    # without the mask (all cells real) the same cells are encoded differently
    unmasked = encoding(torch.zeros(1, 9, 12, dtype=torch.bool))
    assert (unmasked[..., :5, :7] - alone).abs().max() > 0.1


# --------------------------------------------------------------------------------------------
# the head: MMDetection's selection and box scaling
# --------------------------------------------------------------------------------------------


def _head(use_sigmoid: bool, max_per_img: int = 3) -> DETRHead:
    return DETRHead(
        num_classes=3,
        embed_dims=8,
        loss_cls=dict(use_sigmoid=use_sigmoid),
        test_cfg=dict(max_per_img=max_per_img),
    )


def test_softmax_head_takes_each_query_best_class_then_top_queries():
    # Query 0 is about equally sure of two classes, both above query 2's best: a flat
    # (query, class) top-3 would take query 0 twice; MMDetection takes each query's best class.
    logits = torch.tensor([[[4.0, 3.9, -9, -9], [2, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 0, 9]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.3, 0.2, 0.4], [0.9, 0.9, 0.4, 0.4]]])
    boxes = torch.cat([boxes, torch.full((1, 1, 4), 0.5)], 1)
    (result,) = _head(False).predict_by_feat(logits, boxes, [dict(img_shape=(100, 200))])
    probs = logits[0].softmax(-1)[:, :-1]  # background (last) dropped
    flat = probs.flatten().topk(3).indices
    assert (flat // 3).tolist() == [1, 0, 0], 'the flat top-3 would repeat query 0'
    assert result['labels'].tolist() == [0, 0, 1]  # queries 1, 0, 2
    torch.testing.assert_close(result['dets'][:, 4], probs[[1, 0, 2], [0, 0, 1]])
    # normalised (cx, cy, w, h) times the real 100 x 200 image, clipped to it
    expected = torch.tensor([[20.0, 10, 60, 50], [80, 40, 120, 60], [140, 70, 200, 100]])
    torch.testing.assert_close(result['dets'][:, :4], expected)


def test_sigmoid_head_takes_the_top_query_class_pairs():
    logits = torch.tensor([[[5.0, 4.9, -9], [3.0, -9, -9], [-9, -9, -9]]])
    boxes = torch.full((1, 3, 4), 0.5)
    (result,) = _head(True).predict_by_feat(logits, boxes, [dict(img_shape=(10, 10))])
    assert result['labels'].tolist() == [0, 1, 0]  # query 0 twice
    torch.testing.assert_close(result['dets'][:, 4], torch.tensor([5.0, 4.9, 3.0]).sigmoid())


@pytest.mark.parametrize('use_sigmoid', [False, True])
def test_head_deploy_path_equals_eager_per_image(use_sigmoid):
    head = _head(use_sigmoid, max_per_img=5)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, head.cls_out_channels, generator=gen) * 3
    boxes = torch.rand(2, 7, 4, generator=gen)
    shapes = [(120, 90), (64, 200)]
    eager = head.predict_by_feat(logits, boxes, [dict(img_shape=s) for s in shapes])
    dets, labels = head.predict_by_feat_deploy(logits, boxes, torch.tensor(shapes).float())
    for i, result in enumerate(eager):
        assert torch.equal(result['labels'], labels[i])
        assert torch.equal(result['dets'], dets[i])


def test_small_model_detects_and_deploy_path_equals_eager(small_detr):
    model = small_detr
    img, metas = random_batch([(200, 280), (176, 250)])
    inputs = batch_inputs(img, metas)
    eager = outputs_to_results(PyTorchBackend(model)(inputs), metas)
    deploy = outputs_to_results(PyTorchBackend(model, mode='deploy')(inputs), metas)
    assert [len(r) for r in eager] == [10, 10]
    # random weights that detect: distinct scores (no near-ties for float drift to flip) and
    # spread boxes, not one box ten times
    assert np.diff(eager[0].scores).max() < -1e-5 and np.ptp(eager[0].scores) > 0.05
    assert np.ptp(eager[0].boxes[:, 0]) > 20
    stats = match_result_lists(eager, deploy)
    assert stats.exact_fraction == 1.0 and stats.max_score_err < 1e-6, stats
