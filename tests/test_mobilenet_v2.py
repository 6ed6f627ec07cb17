"""MobileNetV2 classifier: checkpoint keys, eager semantics against a functional reference, the
classifier pre-processing of both config generations, the data sets and the accuracy metric."""

import dataclasses
import json
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from deploy.apis.model import init_detector
from deploy.config import get_preprocess_cfg, load_config, spec_from_config
from deploy.config.classification import get_classification_dataset_cfg
from deploy.datasets.classification import (
    ClassificationPipeline,
    center_crop_box,
    edge_resize_size,
    load_classification_samples,
)
from deploy.datasets.pipeline import normalize
from deploy.datasets.synthetic_classification import (
    CLASS_NAMES,
    generate_synthetic_classification,
)
from deploy.errors import CheckpointError, ConfigError
from deploy.evaluation.accuracy import accuracy, topk_labels
from deploy.models.backbones.mobilenet_v2 import MobileNetV2, make_divisible
from deploy.models.checkpoint import save_checkpoint
from deploy.models.random_weights import make_detections_likely

CFG_0X = ROOT / 'configs' / 'mobilenet_v2' / 'mobilenet_v2_b32x8_imagenet.py'
CFG_1X = ROOT / 'configs' / 'mobilenet_v2' / 'mobilenet-v2_8xb32_in1k.py'
BUNDLED = ROOT / 'configs' / 'bundled' / 'mobilenet_v2_tiny_synthetic.py'
MANIFEST = json.loads((ROOT / 'tests' / 'data' / 'mmpretrain_mobilenet_v2.json').read_text())
#: MobileNetV2's stages: expand ratio, channels, blocks, stride (the paper's table 2)
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize('config', [CFG_0X, CFG_1X], ids=['mmcls-0.x', 'mmpretrain-1.x'])
def test_state_dict_matches_mmpretrain(config):
    """Keys, shapes and order of MMPretrain 1.2.0's checkpoint (MMClassification 0.x builds the
    same modules), from both config generations."""
    model, _ = init_detector(str(config), logger=None)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(k, shape) for k, shape in MANIFEST['state_dict']]


def test_both_config_generations_describe_the_same_model():
    specs = [spec_from_config(load_config(c)) for c in (CFG_0X, CFG_1X)]
    assert specs[0] == specs[1]
    assert specs[0].task == 'classification' and specs[0].outputs == ('scores',)
    pre = specs[0].preprocess
    assert (pre.resize_edge, pre.scale, pre.crop_size) == ('short', (256, 256), (224, 224))
    assert (pre.resize_backend, pre.interpolation, pre.to_rgb) == ('pillow', 'bilinear', True)
    # the real MMPretrain 1.2.0 pipeline and normalisation
    assert MANIFEST['test_pipeline'][1] == dict(
        type='ResizeEdge', scale=256, edge='short', backend='pillow'
    )
    assert list(pre.mean) == MANIFEST['data_preprocessor']['mean']
    assert list(pre.std) == MANIFEST['data_preprocessor']['std']


def test_widths_follow_make_divisible():
    assert [make_divisible(v, 8) for v in (32 * 0.5, 24 * 0.35, 16 * 0.25, 96 * 0.75, 3)] == [
        16,
        8,
        8,
        72,
        8,
    ]
    small = MobileNetV2(widen_factor=0.5)
    widths = [getattr(small, f'layer{i}')[-1].conv[-1].conv.out_channels for i in range(1, 8)]
    assert small.conv1.conv.out_channels == 16
    assert widths == [8, 16, 16, 32, 48, 80, 160] and small.conv2.conv.out_channels == 1280
    assert MobileNetV2(widen_factor=1.5).conv2.conv.out_channels == 1920


def test_out_indices_and_bad_arguments():
    model = MobileNetV2(widen_factor=0.25, out_indices=(0, 2, 6, 7)).eval()
    outs = model(torch.zeros(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [
        (1, 8, 32, 48),
        (1, 8, 8, 12),
        (1, 80, 2, 3),
        (1, 1280, 2, 3),
    ]
    with pytest.raises(ConfigError, match='out_indices'):
        MobileNetV2(out_indices=(8,))
    with pytest.raises(ConfigError, match='frozen_stages'):
        MobileNetV2(frozen_stages=8)


def test_frozen_stages_and_norm_eval_while_training():
    model = MobileNetV2(widen_factor=0.25, frozen_stages=2).train()
    assert not any(p.requires_grad for p in model.conv1.parameters())
    assert not any(p.requires_grad for p in model.layer2.parameters())
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert not model.layer1.training and not model.layer2.training and model.layer3.training
    # as in MMPretrain: the stem's parameters are frozen, its BatchNorm is not put in eval
    assert model.conv1.bn.training
    model = MobileNetV2(widen_factor=0.25, norm_eval=True).train()
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def _reference_forward(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """MobileNetV2 + average pooling + linear + softmax written from the paper's table and the
    checkpoint keys alone (no zoo code): conv-BN-ReLU6 units, inverted residual blocks."""

    def unit(prefix, x, stride=1, groups=1, act=True):
        weight = sd[f'{prefix}.conv.weight']
        x = F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, groups)
        bn = [sd[f'{prefix}.bn.{n}'] for n in ('running_mean', 'running_var', 'weight', 'bias')]
        x = F.batch_norm(x, *bn, training=False, eps=1e-5)
        return x.clamp(0, 6) if act else x

    x = unit('backbone.conv1', x, stride=2)
    for stage, (expand, _, blocks, first_stride) in enumerate(STAGES, 1):
        for block in range(blocks):
            prefix, shortcut = f'backbone.layer{stage}.{block}.conv', x
            i = 0
            if expand != 1:
                x, i = unit(f'{prefix}.0', x), 1
            stride = first_stride if block == 0 else 1
            x = unit(f'{prefix}.{i}', x, stride, groups=x.shape[1])
            x = unit(f'{prefix}.{i + 1}', x, act=False)
            if stride == 1 and x.shape[1] == shortcut.shape[1]:
                x = x + shortcut
    x = unit('backbone.conv2', x).mean(dim=(2, 3))
    return F.softmax(F.linear(x, sd['head.fc.weight'], sd['head.fc.bias']), dim=1)


def test_eager_prediction_matches_a_functional_reference():
    torch.manual_seed(0)
    options = {'model.backbone.widen_factor': 0.35, 'model.head.num_classes': 10}
    model, _ = init_detector(str(CFG_0X), cfg_options=options, logger=None)
    make_detections_likely(model)
    x = torch.randn(3, 3, 64, 80)
    with torch.no_grad():
        scores = model.predict(x)
        logits = model.forward_raw(x)['cls_score']
        (deployed,) = model.forward_deploy(x)
        expected = _reference_forward(model.state_dict(), x)
    assert scores.shape == (3, 10) and torch.allclose(scores.sum(1), torch.ones(3))
    assert scores.std() > 0.01, 'the reference must tell classes apart'
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores, F.softmax(logits, dim=1))
    torch.testing.assert_close(deployed, scores)


def test_mmclassification_and_mmpretrain_checkpoints_load(tmp_path):
    torch.manual_seed(1)
    options = {'model.backbone.widen_factor': 0.25, 'model.head.num_classes': 3}
    model, _ = init_detector(str(CFG_0X), cfg_options=options, logger=None)
    state_dict = model.state_dict()

    # MMClassification 0.x: meta.CLASSES, and an mmcls object pickled into the meta (a module
    # of that name exists only while saving: loading must not need it)
    fake = types.ModuleType('mmcls')

    class Config(dict):
        pass

    Config.__module__, Config.__qualname__ = fake.__name__, 'Config'
    fake.Config = Config
    old = tmp_path / 'mmcls.pth'
    sys.modules[fake.__name__] = fake
    try:
        meta = {'CLASSES': ['a', 'b', 'c'], 'config': Config(lr=0.1)}
        torch.save({'meta': meta, 'state_dict': state_dict}, old)
    finally:
        del sys.modules[fake.__name__]
    # MMPretrain 1.x: meta.dataset_meta.classes, keys under DDP's module. prefix
    new = tmp_path / 'mmpretrain.pth'
    prefixed = {f'module.{k}': v for k, v in state_dict.items()}
    torch.save(
        {'meta': {'dataset_meta': {'classes': ['a', 'b', 'c']}}, 'state_dict': prefixed}, new
    )
    x = torch.randn(1, 3, 32, 32)
    for path in (old, new):
        loaded, _ = init_detector(str(CFG_0X), str(path), cfg_options=options, logger=None)
        assert loaded.class_names == ('a', 'b', 'c')
        with torch.no_grad():
            torch.testing.assert_close(loaded.predict(x), model.eval().predict(x))
    wrong = tmp_path / 'wrong.pth'
    save_checkpoint(model, wrong, meta={'CLASSES': ('a', 'b')})
    with pytest.raises(CheckpointError, match='2 classes'):
        init_detector(str(CFG_0X), str(wrong), cfg_options=options, logger=None)
    assert pickle.loads(pickle.dumps(loaded.spec)) == loaded.spec


# --------------------------------------------------------------------------------------------
# pre-processing
# --------------------------------------------------------------------------------------------


def test_edge_resize_and_centre_crop_rules():
    # (h, w, length, edge) -> (new_w, new_h); the other side is truncated, not rounded
    assert edge_resize_size(300, 400, 256, 'short') == (341, 256)
    assert edge_resize_size(401, 300, 256, 'short') == (256, 342)
    assert edge_resize_size(300, 400, 256, 'long') == (256, 192)
    assert edge_resize_size(300, 400, 100, 'height') == (133, 100)
    assert edge_resize_size(300, 400, 100, 'width') == (100, 75)
    assert edge_resize_size(256, 400, 256, 'short') is None
    # offsets round half to even, as Python's round in MMCV's CenterCrop
    assert center_crop_box(224, 257, (224, 224)) == (0, 224, 16, 240)  # 16.5 -> 16
    assert center_crop_box(224, 259, (224, 224)) == (0, 224, 18, 242)  # 17.5 -> 18
    assert center_crop_box(100, 300, (224, 224)) == (0, 100, 38, 262)  # clipped to the image


def test_pipeline_is_pillow_resize_then_centre_crop():
    """The 1.x pipeline (ResizeEdge short 256 with Pillow, CenterCrop 224) on a 300x451 image,
    step by step with Pillow itself."""
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)
    pre = get_preprocess_cfg(load_config(CFG_1X))
    tensor, meta = ClassificationPipeline(pre)(image)
    resized = np.asarray(Image.fromarray(image).resize((384, 256), Image.Resampling.BILINEAR))
    crop = resized[16:240, 80:304]
    expected = normalize(crop, pre.mean, pre.std, True).transpose(2, 0, 1)
    assert meta['img_shape'] == (224, 224) and meta['ori_shape'] == (300, 451)
    np.testing.assert_array_equal(tensor.numpy(), expected)
    # OpenCV's bilinear does not antialias: the backend named in the config matters
    opencv = ClassificationPipeline(dataclasses.replace(pre, resize_backend='cv2'))
    assert np.abs(opencv(image)[0].numpy() - expected).max() > 0.1


def _cfg_with(tmp_path, pipeline_text: str, schema: str = '0.x'):
    if schema == '0.x':
        body = (
            "model = dict(type='ImageClassifier', backbone=dict(type='MobileNetV2'),\n"
            "             head=dict(type='LinearClsHead', num_classes=3, in_channels=1280))\n"
            f'data = dict(test=dict(data_prefix="x", pipeline={pipeline_text}))\n'
        )
    else:
        body = (
            "model = dict(type='ImageClassifier', backbone=dict(type='MobileNetV2'),\n"
            "             head=dict(type='LinearClsHead', num_classes=3, in_channels=1280))\n"
            'data_preprocessor = dict(mean=[1, 2, 3], std=[4, 5, 6], to_rgb=True)\n'
            f'test_dataloader = dict(dataset=dict(data_root="r", pipeline={pipeline_text}))\n'
        )
    path = tmp_path / f'cfg_{abs(hash(pipeline_text + schema))}.py'
    path.write_text(body)
    return load_config(path)


NORM = "dict(type='Normalize', mean=[1, 2, 3], std=[4, 5, 6])"


def test_pipeline_variants_of_both_generations(tmp_path):
    pre = get_preprocess_cfg(
        _cfg_with(tmp_path, f"[dict(type='Resize', size=(64, -1), adaptive_side='long'), "
                            f"dict(type='CenterCrop', crop_size=(48, 32)), {NORM}]")
    )  # fmt: skip
    assert (pre.resize_edge, pre.scale, pre.crop_size, pre.resize_backend) == (
        'long',
        (64, 64),
        (48, 32),  # 0.x crop sizes are (h, w)
        'cv2',
    )
    pre = get_preprocess_cfg(_cfg_with(tmp_path, f"[dict(type='Resize', size=(40, 50)), {NORM}]"))
    assert (pre.resize_edge, pre.scale, pre.keep_ratio) == (None, (50, 40), False)
    pre = get_preprocess_cfg(
        _cfg_with(
            tmp_path,
            "[dict(type='ResizeEdge', scale=80, interpolation='bicubic', backend='pillow'),"
            " dict(type='CenterCrop', crop_size=(48, 32))]",
            schema='1.x',
        )
    )
    assert (pre.interpolation, pre.crop_size, pre.mean) == ('bicubic', (32, 48), (1.0, 2.0, 3.0))


@pytest.mark.parametrize(
    'pipeline, message',
    [
        (f"[dict(type='Resize', size=64), dict(type='TenCrop', crop_size=32), {NORM}]", 'TenCrop'),
        (f"[dict(type='Resize', size=64, interpolation='area', backend='pillow'), {NORM}]", 'area'),
        (f"[dict(type='Resize', scale=64, keep_ratio=True), {NORM}]", 'keep_ratio=True'),
        (f"[dict(type='CenterCrop', crop_size=32), {NORM}]", 'no `Resize`'),
        ("[dict(type='Resize', size=64)]", 'no normalisation'),
        (f"[dict(type='Resize', size=64), {NORM}, {NORM}]", 'ambiguous normalisation'),
    ],
    ids=['TenCrop', 'area-in-pillow', 'keep-ratio', 'no-resize', 'no-normalize', 'two-normalize'],
)
def test_unsupported_pipelines_are_refused(tmp_path, pipeline, message):
    with pytest.raises(ConfigError, match=message):
        get_preprocess_cfg(_cfg_with(tmp_path, pipeline))


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('cls')
    return generate_synthetic_classification(root / 'a', num_train=12, num_val=20, seed=3)


def test_generated_set_is_deterministic_and_readable_both_ways(small_set, tmp_path):
    again = generate_synthetic_classification(tmp_path / 'b', num_train=12, num_val=20, seed=3)
    for split in ('train', 'val'):
        a, b = small_set[split].read_text(), again[split].read_text()
        assert a == b and len(a.splitlines()) == {'train': 12, 'val': 20}[split]
        first = a.splitlines()[0].split()[0]
        assert (small_set['root'] / split / first).read_bytes() == (
            again['root'] / split / first
        ).read_bytes()
    from_file = load_classification_samples(small_set['val_img_prefix'], small_set['val'])
    from_folders = load_classification_samples(small_set['val_img_prefix'])
    assert from_folders.class_names == CLASS_NAMES
    by_path = dict(zip(from_folders.paths, from_folders.labels))
    assert {p: by_path[p] for p in from_file.paths} == dict(zip(from_file.paths, from_file.labels))
    assert len(set(from_file.labels.tolist())) > 2


def test_dataset_config_of_both_generations():
    assert get_classification_dataset_cfg(load_config(CFG_0X)) == dict(
        ann_file='data/imagenet/meta/val.txt',
        img_prefix='data/imagenet/val',
        classes=None,
        key='data.test',
    )
    assert get_classification_dataset_cfg(load_config(CFG_1X))['img_prefix'] == (
        'data/imagenet/val'
    )
    assert get_classification_dataset_cfg(load_config(BUNDLED))['classes'] == CLASS_NAMES


def test_bad_classification_sets(small_set, tmp_path):
    prefix = small_set['val_img_prefix']
    with pytest.raises(ConfigError, match='annotation file not found'):
        load_classification_samples(prefix, tmp_path / 'missing.txt')
    bad = tmp_path / 'bad.txt'
    bad.write_text('circle/000000.jpg 0\nno-label-here\n')
    with pytest.raises(ConfigError, match='line 2'):
        load_classification_samples(prefix, bad)
    bad.write_text('circle/000000.jpg 7\n')
    with pytest.raises(ConfigError, match='out of range'):
        load_classification_samples(prefix, bad, classes=CLASS_NAMES)
    with pytest.raises(ConfigError, match='class folders'):
        load_classification_samples(prefix, classes=('a', 'b'))
    with pytest.raises(ConfigError, match='image folder not found'):
        load_classification_samples(tmp_path / 'nowhere')


# --------------------------------------------------------------------------------------------
# metric
# --------------------------------------------------------------------------------------------


def test_topk_accuracy_matches_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.random((200, 7)).astype(np.float32)
    scores[::10, 3] = scores[::10, 4] = 2.0  # ties: the lower index ranks first
    labels = rng.integers(0, 7, 200)
    result = accuracy(scores, labels, topk=(1, 3))
    for k in (1, 3):
        hits = [labels[i] in sorted(range(7), key=lambda c: (-scores[i, c], c))[:k] for i in
                range(200)]  # fmt: skip
        assert result[f'accuracy/top{k}'] == pytest.approx(100.0 * np.mean(hits))
    assert (topk_labels(scores[:1], 2) == [[3, 4]]).all()
    zero = np.zeros((2, 3), np.float32)
    zero[:, 0] = 1.0  # a label whose score is not above thr=0 never counts
    assert accuracy(zero, np.array([0, 1]), topk=(1, 2))['accuracy/top2'] == 50.0
    with pytest.raises(ConfigError, match='top-5'):
        accuracy(scores[:, :3], labels, topk=(1, 5))
