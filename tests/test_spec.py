"""The model contract: typed settings parsed once, the spec's JSON, and a run's settings
reconciled with the ones baked into a model file."""

import json

import pytest
from conftest import ROOT

from deploy.config import get_test_settings, load_config, spec_from_config
from deploy.errors import ConfigError
from deploy.evaluation.class_map import UNSCORED, resolve_class_map
from deploy.spec import (
    DenseSettings,
    InputSpec,
    ModelSpec,
    NmsSettings,
    RcnnSettings,
    ResultFilter,
    RpnSettings,
    TestSettings,
    parse_settings,
    read_onnx_spec,
    reconcile_settings,
    test_settings_for_model,
)

CONFIGS = ROOT / 'configs'
RETINA = CONFIGS / 'retinanet' / 'retinanet_r50_fpn_1x_coco.py'
FCOS = CONFIGS / 'fcos' / 'fcos_r50_caffe_fpn_gn-head_4x4_1x_coco.py'
MASK = CONFIGS / 'mask_rcnn' / 'mask_rcnn_r50_fpn_1x_coco.py'


def _spec(config, *options):
    return spec_from_config(load_config(config, list(options) or None))


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------
def test_every_default_is_stated_once():
    """The RPN keeps 1000 proposals and a head 100 detections, whoever asks."""
    assert RpnSettings().max_per_img == 1000 and RpnSettings().nms.iou_threshold == 0.7
    assert DenseSettings().max_per_img == 100 and RcnnSettings().mask_thr_binary == 0.5
    model = dict(rpn_head=dict(type='RPNHead'), roi_head=dict(type='StandardRoIHead'))
    settings = test_settings_for_model(model, {'rpn': {}, 'rcnn': {}})
    assert settings.rpn == RpnSettings() and settings.rcnn == RcnnSettings()


def test_unknown_keys_name_the_closest_known_one():
    with pytest.raises(ConfigError, match=r'`model.test_cfg.scor_thr`; did you mean `score_thr`'):
        test_settings_for_model({'bbox_head': {'type': 'RetinaHead'}}, {'scor_thr': 0.1})
    with pytest.raises(ConfigError, match=r'`model.test_cfg.rcnn.mask_thr`'):
        test_settings_for_model({'roi_head': {'type': 'X'}}, {'rcnn': {'mask_thr': 0.4}})
    with pytest.raises(ConfigError, match=r'known keys'):
        parse_settings(NmsSettings, {'zzz': 1}, 'nms')


def test_values_are_typed_and_checked():
    settings = parse_settings(DenseSettings, {'score_thr': 1, 'nms': {'iou_threshold': 0.6}}, 'x')
    assert isinstance(settings.score_thr, float) and settings.nms.iou_threshold == 0.6
    for bad, message in [
        ({'score_thr': 'abc'}, 'must be a number'),
        ({'max_per_img': 1.5}, 'integer'),
        ({'max_per_img': True}, 'integer'),
        ({'nms': 0.5}, 'must be a dict'),
        ({'nms': {'type': 'soft_nms'}}, 'not supported by this head'),
        ({'nms': {'method': 'cubic'}}, "'linear', 'gaussian'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_settings(DenseSettings, bad, 'model.test_cfg')


def test_mmdetection_2x_rpn_keys_are_upgraded():
    rpn = parse_settings(
        RpnSettings, {'nms_thr': 0.6, 'max_num': 300, 'nms_post': 300, 'nms_pre': 200}, 'rpn'
    )
    assert rpn.nms.iou_threshold == 0.6 and rpn.max_per_img == 300 and rpn.nms_pre == 200
    with pytest.raises(ConfigError, match='nms_across_levels'):
        parse_settings(RpnSettings, {'nms_across_levels': True}, 'rpn')


def test_config_settings_and_spec():
    head = get_test_settings(load_config(RETINA)).head
    assert head == DenseSettings(
        score_thr=0.05,
        nms_pre=1000,
        min_bbox_size=0,
        nms=NmsSettings(iou_threshold=0.5, max_output_boxes_per_class=100),
        max_per_img=100,
    )
    spec = _spec(MASK)
    assert spec.model_type == 'MaskRCNN' and spec.task == 'instance-segmentation'
    assert spec.num_classes == 80 and spec.outputs == ('dets', 'labels', 'masks')
    assert spec.test_cfg.rpn.max_per_img == 1000 and spec.mask_thr_binary == 0.5


def test_spec_json_round_trip_and_version_checks():
    spec = _spec(MASK).replace(
        class_names=('a', 'b'),
        inputs=InputSpec(dynamic=True, dynamic_size=True, size_divisor=32),
        opset=18,
        exporter='dynamo',
        extra={'note': [1, 2]},
    )
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and isinstance(again.test_cfg.rcnn, RcnnSettings)
    data = json.loads(spec.to_json())
    with pytest.raises(ConfigError, match='export it again'):
        ModelSpec.from_dict({k: v for k, v in data.items() if k != 'spec_version'})
    with pytest.raises(ConfigError, match='update the tool'):
        ModelSpec.from_dict(dict(data, spec_version=99))


def test_foreign_onnx_has_no_spec(tmp_path):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node('Identity', ['x'], ['y'])],
        'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])],
    )
    save(helper.make_model(graph), str(tmp_path / 'f.onnx'))
    assert read_onnx_spec(tmp_path / 'f.onnx') is None


# --------------------------------------------------------------------------------------------
# a run's settings against the baked ones
# --------------------------------------------------------------------------------------------
def _baked(config, *options):
    from deploy.apis.model import init_detector

    model, _ = init_detector(str(config), cfg_options=list(options) or None, logger=None)
    return model.spec


@pytest.fixture(scope='module')
def retina_spec():
    return _baked(RETINA)


def test_stricter_final_settings_become_a_filter(retina_spec):
    wanted = _spec(RETINA, 'model.test_cfg.score_thr=0.3', 'model.test_cfg.max_per_img=20')
    assert reconcile_settings(retina_spec, wanted.test_cfg) == ResultFilter(
        score_thr=0.3, max_per_img=20
    )
    same = reconcile_settings(retina_spec, _spec(RETINA).test_cfg)
    assert same == ResultFilter()


@pytest.mark.parametrize(
    'option',
    [
        'model.test_cfg.score_thr=0.01',  # lower: the graph already dropped those
        'model.test_cfg.max_per_img=300',  # more rows than the graph has
        'model.test_cfg.nms.iou_threshold=0.4',
        'model.test_cfg.nms_pre=500',
        'model.test_cfg.deploy_nms_pre=1000',
        'model.test_cfg.min_bbox_size=4.0',
    ],
)
def test_differences_the_graph_cannot_honour_are_refused(retina_spec, option):
    key, value = option.split('=')
    with pytest.raises(ConfigError, match=f'{key}={value} differs') as info:
        reconcile_settings(retina_spec, _spec(RETINA, option).test_cfg, 'm.onnx')
    assert f'--cfg-options {option}' in str(info.value) and '\n' not in str(info.value)


def test_score_factor_heads_cannot_raise_the_threshold_after_the_graph():
    """FCOS thresholds the class score before multiplying by centerness: a higher threshold
    on the output scores would drop the wrong detections."""
    baked = _baked(FCOS)
    assert not baked.threshold_on_output_score
    with pytest.raises(ConfigError, match='score_thr=0.3 differs'):
        reconcile_settings(baked, _spec(FCOS, 'model.test_cfg.score_thr=0.3').test_cfg)


def test_two_stage_rpn_changes_are_refused_and_masks_thresholds_apply():
    baked = _baked(MASK)
    assert baked.threshold_on_output_score
    with pytest.raises(ConfigError, match=r'model.test_cfg.rpn.max_per_img=500 differs'):
        reconcile_settings(baked, _spec(MASK, 'model.test_cfg.rpn.max_per_img=500').test_cfg)
    wanted = _spec(
        MASK, 'model.test_cfg.rcnn.mask_thr_binary=0.7', 'model.test_cfg.rcnn.score_thr=0.5'
    )
    assert reconcile_settings(baked, wanted.test_cfg) == ResultFilter(
        score_thr=0.5, mask_thr_binary=0.7
    )
    with pytest.raises(ConfigError, match='another model'):
        reconcile_settings(baked, _spec(RETINA).test_cfg)
    empty = baked.replace(test_cfg=TestSettings())
    with pytest.raises(ConfigError, match='another model'):
        reconcile_settings(empty, _spec(MASK).test_cfg)


# --------------------------------------------------------------------------------------------
# classes
# --------------------------------------------------------------------------------------------
CATS = ('circle', 'square', 'star')
IDS = (1, 2, 5)


def test_class_map_modes():
    assert resolve_class_map(CATS, 3, CATS, IDS) == [1, 2, 5]
    swapped = ('square', 'circle', 'star')
    with pytest.raises(ConfigError, match="another order: label 0 is 'square'"):
        resolve_class_map(swapped, 3, CATS, IDS)
    assert resolve_class_map(swapped, 3, CATS, IDS, 'name') == [2, 1, 5]
    assert resolve_class_map(swapped, 3, CATS, IDS, 'index') == [1, 2, 5]
    assert resolve_class_map(('star', 'ring'), 2, CATS, IDS, 'name') == [5, UNSCORED]
    assert resolve_class_map(None, 5, CATS, IDS, 'index') == [1, 2, 5, UNSCORED, UNSCORED]
    assert resolve_class_map(None, 3, CATS, IDS) == [1, 2, 5]
    with pytest.raises(ConfigError, match='predicts 80 classes'):
        resolve_class_map(None, 80, CATS, IDS)
    with pytest.raises(ConfigError, match='the model has 2 classes'):
        resolve_class_map(('circle', 'square'), 2, CATS, IDS)


def test_class_map_file(tmp_path):
    path = tmp_path / 'map.json'
    path.write_text(json.dumps({'round': 'circle', 'box': 'square'}))
    assert resolve_class_map(('round', 'box', 'other'), 3, CATS, IDS, str(path)) == [
        1,
        2,
        UNSCORED,
    ]
