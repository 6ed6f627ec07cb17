"""Config loading: the shipped RetinaNet chain, --cfg-options, and 2.x / 3.x schema readers."""

import argparse
import os
import shutil
from pathlib import Path

import pytest

from deploy.config import (
    PreprocessConfig,
    add_cfg_options_argument,
    get_class_names,
    get_model_cfg,
    get_preprocess_cfg,
    get_test_dataset_cfg,
    get_test_settings,
    load_config,
    missing_key_error,
)
from deploy.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
RETINANET = ROOT / 'configs' / 'retinanet' / 'retinanet_r50_fpn_1x_coco.py'
FIXTURES = Path(__file__).resolve().parent / 'data' / 'configs'

COCO_PREPROCESS = PreprocessConfig(
    mean=(123.675, 116.28, 103.53),
    std=(58.395, 57.12, 57.375),
    to_rgb=True,
    scale=(1333, 800),
    keep_ratio=True,
    size_divisor=32,
    pad_value=0.0,
)


# ---------------------------------------------------------------- the shipped RetinaNet config


def test_retinanet_config_resolves_bases():
    cfg = load_config(RETINANET)
    model = get_model_cfg(cfg)
    assert model.type == 'RetinaNet'
    assert model.backbone.type == 'ResNet' and model.backbone.depth == 50
    assert model.backbone.style == 'pytorch'
    assert model.backbone.init_cfg.checkpoint == 'torchvision://resnet50'
    assert model.neck.start_level == 1 and model.neck.add_extra_convs == 'on_input'
    head = model.bbox_head
    assert head.type == 'RetinaHead' and head.num_classes == 80
    assert head.anchor_generator.octave_base_scale == 4
    assert head.anchor_generator.strides == [8, 16, 32, 64, 128]
    # from the schedule / runtime / dataset bases
    assert cfg.optimizer.lr == 0.01  # RetinaNet's own override of the 1x schedule
    assert cfg.runner.max_epochs == 12
    assert cfg.evaluation.metric == 'bbox'
    assert cfg.onnx_config == dict(opset_version=17, input_shape=None)
    assert cfg.backend_config == dict()


def test_retinanet_test_cfg():
    test_cfg = get_test_settings(load_config(RETINANET)).head
    assert test_cfg.nms_pre == 1000
    assert test_cfg.min_bbox_size == 0
    assert test_cfg.score_thr == 0.05
    assert test_cfg.nms.type == 'nms' and test_cfg.nms.iou_threshold == 0.5
    assert test_cfg.nms.max_output_boxes_per_class == 100
    assert test_cfg.max_per_img == 100
    assert test_cfg.deploy_nms_pre == -1


def test_retinanet_preprocess_and_dataset():
    cfg = load_config(RETINANET)
    assert get_preprocess_cfg(cfg) == COCO_PREPROCESS
    assert get_test_dataset_cfg(cfg) == dict(
        ann_file='data/synthetic_coco/annotations/instances_val2017.json',
        img_prefix='data/synthetic_coco/val2017/',
        key='data.test.ann_file',
    )
    assert get_class_names(cfg) is None


def test_instance_base_resolves():
    cfg = load_config(ROOT / 'configs' / '_base_' / 'datasets' / 'coco_instance.py')
    assert cfg.evaluation.metric == ['bbox', 'segm']
    assert get_preprocess_cfg(cfg) == COCO_PREPROCESS


# ---------------------------------------------------------------- --cfg-options


def test_cfg_options_as_strings():
    cfg = load_config(RETINANET, ['model.test_cfg.score_thr=0.3', 'model.test_cfg.nms_pre=500'])
    test_cfg = get_test_settings(cfg).head
    assert test_cfg.score_thr == pytest.approx(0.3)
    assert test_cfg.nms_pre == 500
    assert test_cfg.max_per_img == 100  # untouched siblings survive


def test_cfg_options_as_dict():
    cfg = load_config(RETINANET, {'model.test_cfg.score_thr': 0.3, 'onnx_config.opset_version': 11})
    assert get_test_settings(cfg).head.score_thr == 0.3
    assert cfg.onnx_config.opset_version == 11


def test_cfg_options_argparse_round_trip():
    parser = add_cfg_options_argument(argparse.ArgumentParser())
    args = parser.parse_args(
        ['--cfg-options', 'model.test_cfg.score_thr=0.3', 'onnx_config.input_shape=(800,1344)']
    )
    cfg = load_config(RETINANET, args.cfg_options)
    assert get_test_settings(cfg).head.score_thr == pytest.approx(0.3)
    assert tuple(cfg.onnx_config.input_shape) == (800, 1344)
    assert parser.parse_args([]).cfg_options is None


def test_cfg_options_without_equals_is_config_error():
    with pytest.raises(ConfigError, match='key=value'):
        load_config(RETINANET, ['model.test_cfg.score_thr'])


# ---------------------------------------------------------------- 2.x / 3.x schemas


@pytest.mark.parametrize(
    'name',
    ['retinanet_2x_flat.py', 'retinanet_2x_msfa.py', 'retinanet_3x.py', 'retinanet_3x_child.py'],
)
def test_equivalent_preprocess_across_schemas(name):
    assert get_preprocess_cfg(load_config(FIXTURES / name)) == COCO_PREPROCESS


def test_3x_test_cfg_and_dataset():
    cfg = load_config(FIXTURES / 'retinanet_3x.py')
    assert cfg.test_cfg.type == 'TestLoop'
    assert get_test_settings(cfg).head.score_thr == 0.05  # model.test_cfg, not the loop
    assert get_test_dataset_cfg(cfg) == dict(
        ann_file=os.path.join('data/coco/', 'annotations/instances_val2017.json'),
        img_prefix=os.path.join('data/coco/', 'val2017/'),
        key='test_dataloader.dataset.ann_file',
    )
    assert get_class_names(cfg) == ('cat', 'dog', 'bird')


def test_3x_base_inheritance_in_fixture():
    cfg = load_config(FIXTURES / 'retinanet_3x_child.py')
    assert get_test_settings(cfg).head.score_thr == 0.2
    assert get_test_settings(cfg).head.nms_pre == 1000


def test_2x_dataset_and_classes():
    cfg = load_config(FIXTURES / 'retinanet_2x_flat.py')
    assert get_test_dataset_cfg(cfg) == dict(
        ann_file='data/coco/annotations/instances_val2017.json',
        img_prefix='data/coco/val2017/',
        key='data.test.ann_file',
    )
    assert get_class_names(cfg) == ('cat', 'dog', 'bird')


def test_old_2x_top_level_test_cfg_is_read():
    cfg = load_config(FIXTURES / 'old_2x_top_level_test_cfg.py')
    test_cfg = get_test_settings(cfg)
    assert test_cfg.is_two_stage and test_cfg.head is None  # two-stage: rpn + rcnn
    assert test_cfg.rcnn.score_thr == 0.05 and test_cfg.rpn.max_per_img == 1000
    # top-level test_pipeline (no data.test), caffe-style normalisation, no Pad
    assert get_preprocess_cfg(cfg) == PreprocessConfig(
        mean=(103.53, 116.28, 123.675),
        std=(1.0, 1.0, 1.0),
        to_rgb=False,
        scale=(1000, 600),
        keep_ratio=True,
        size_divisor=None,
        pad_value=0.0,
    )


def test_3x_loop_test_cfg_is_not_the_model_test_cfg():
    path = FIXTURES / 'retinanet_3x_no_model_test_cfg.py'
    with pytest.raises(ConfigError) as info:
        get_test_settings(load_config(path))
    assert '`model.test_cfg`' in str(info.value)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- errors name the file


def test_missing_config_file(tmp_path):
    path = tmp_path / 'nope.py'
    with pytest.raises(ConfigError, match='config file not found') as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / 'malformed.py'
    shutil.copy(FIXTURES / 'malformed_config.txt', path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and 'line 3' in message


def test_syntax_error_in_base_names_the_base(tmp_path):
    shutil.copy(FIXTURES / 'malformed_config.txt', tmp_path / 'base.py')
    (tmp_path / 'child.py').write_text("_base_ = './base.py'\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / 'child.py')
    assert 'base.py, line 3' in str(info.value)


def test_missing_base_file():
    with pytest.raises(ConfigError) as info:
        load_config(FIXTURES / 'missing_base.py')
    message = str(info.value)
    assert 'does_not_exist.py' in message and 'missing_base.py' in message


def test_missing_normalisation_names_file():
    path = FIXTURES / 'missing_norm.py'
    with pytest.raises(ConfigError, match='no normalisation') as info:
        get_preprocess_cfg(load_config(path))
    assert str(path) in str(info.value) and 'Normalize' in str(info.value)


def test_ambiguous_normalisation():
    path = FIXTURES / 'ambiguous_norm.py'
    with pytest.raises(ConfigError, match='ambiguous normalisation') as info:
        get_preprocess_cfg(load_config(path))
    assert 'model.data_preprocessor' in str(info.value) and str(path) in str(info.value)


def test_missing_model_key(tmp_path):
    path = tmp_path / 'empty.py'
    path.write_text('x = 1\n')
    with pytest.raises(ConfigError) as info:
        get_model_cfg(load_config(path))
    assert str(info.value) == f'`model` missing in {path}'
    assert str(missing_key_error('a.b', 'f.py')) == '`a.b` missing in f.py'


def test_multi_scale_test_is_refused(tmp_path):
    path = tmp_path / 'ms.py'
    path.write_text(
        "test_pipeline = [dict(type='MultiScaleFlipAug', img_scale=[(1333, 800), (666, 400)],\n"
        "    transforms=[dict(type='Resize', keep_ratio=True),\n"
        "                dict(type='Normalize', mean=[0, 0, 0], std=[1, 1, 1])])]\n"
    )
    with pytest.raises(ConfigError, match='multi-scale'):
        get_preprocess_cfg(load_config(path))
