"""TensorRT compatibility rules on CPU: hand-made graphs that break each rule, and the real export.

Every graph the suite exports is also held to these rules (``tests/conftest.py`` wraps the
exporter); the real RetinaNet export is checked in ``test_export.py``.
"""

import pytest
from onnx import TensorProto, helper

from deploy.backends.tensorrt.compat import (
    TOPK_MAX_K,
    assert_tensorrt_compatible,
    check_tensorrt_compat,
)
from deploy.errors import ExportError


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, 'g', inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    model.ir_version = 9
    return model


def _k(value, name='k'):
    return helper.make_tensor(name, TensorProto.INT64, [1], [value])


def _topk_model(k, length='n'):
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, length])
    vals = helper.make_tensor_value_info('vals', TensorProto.FLOAT, None)
    node = helper.make_node('TopK', ['x', 'k'], ['vals', 'idx'], name='topk_scores', axis=-1)
    return _model([node], [x], [vals], [_k(k)])


def test_topk_k_at_trt_limit_fails():
    problems = check_tensorrt_compat(_topk_model(4000, length=5000))
    assert len(problems) == 1
    assert "TopK 'topk_scores'" in problems[0] and '4000' in problems[0]
    assert str(TOPK_MAX_K - 1) in problems[0]


def test_topk_constant_k_larger_than_axis_at_min_shape():
    model = _topk_model(100)
    # Structurally: a constant k on a dynamic axis is refused (some small input breaks it).
    [problem] = check_tensorrt_compat(model)
    assert "'topk_scores'" in problem and 'dynamic length' in problem
    # Evaluated at the profile's smallest shape: k=100 > 50.
    [problem] = check_tensorrt_compat(model, {'x': [1, 50]})
    assert "'topk_scores'" in problem and 'k=100 exceeds its axis length 50' in problem
    assert check_tensorrt_compat(model, {'x': [1, 200]}) == []
    # A static axis shorter than k (a static graph is evaluated at its only shape).
    [problem] = check_tensorrt_compat(_topk_model(100, length=30))
    assert 'k=100 exceeds its axis length 30' in problem


def test_clamped_topk_passes_at_any_min_shape():
    """k = Min(1000, Shape(x)[1]) -- what deploy.ops.topk.clamped_topk exports."""
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 'n'])
    vals = helper.make_tensor_value_info('vals', TensorProto.FLOAT, None)
    nodes = [
        helper.make_node('Shape', ['x'], ['len'], start=1, end=2),
        helper.make_node('Min', ['len', 'k'], ['k_eff'], name='clamp'),
        helper.make_node('TopK', ['x', 'k_eff'], ['vals', 'idx'], name='topk', axis=-1),
    ]
    model = _model(nodes, [x], [vals], [_k(1000)])
    assert check_tensorrt_compat(model) == []
    assert check_tensorrt_compat(model, {'x': [1, 7]}) == []
    # The same clamp with a bound at TensorRT's limit is refused.
    model = _model(nodes, [x], [vals], [_k(5000)])
    [problem] = check_tensorrt_compat(model)
    assert 'k can reach 5000' in problem


def test_unbounded_computed_k_fails():
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 'n'])
    vals = helper.make_tensor_value_info('vals', TensorProto.FLOAT, None)
    nodes = [
        helper.make_node('Shape', ['x'], ['len'], start=1, end=2),
        helper.make_node('TopK', ['x', 'len'], ['vals', 'idx'], name='full_sort', axis=-1),
    ]
    [problem] = check_tensorrt_compat(_model(nodes, [x], [vals]))
    assert "'full_sort'" in problem and 'not bounded' in problem


def _nms_model(dtype):
    boxes = helper.make_tensor_value_info('boxes', dtype, [1, 'n', 4])
    scores = helper.make_tensor_value_info('scores', dtype, [1, 1, 'n'])
    sel = helper.make_tensor_value_info('sel', TensorProto.INT64, None)
    consts = [
        _k(10, 'max_out'),
        helper.make_tensor('iou', TensorProto.FLOAT, [1], [0.5]),
        helper.make_tensor('thr', TensorProto.FLOAT, [1], [0.1]),
    ]
    node = helper.make_node(
        'NonMaxSuppression', ['boxes', 'scores', 'max_out', 'iou', 'thr'], ['sel'], name='nms'
    )
    return _model([node], [boxes, scores], [sel], consts)


def test_nms_with_fp16_inputs_fails():
    problems = check_tensorrt_compat(_nms_model(TensorProto.FLOAT16))
    assert len(problems) == 2
    assert all("NonMaxSuppression 'nms'" in p and 'FLOAT16' in p for p in problems)
    assert 'boxes' in problems[0] and 'scores' in problems[1]
    assert check_tensorrt_compat(_nms_model(TensorProto.FLOAT)) == []


def test_unsupported_op_fails():
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [8])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, None)
    model = _model([helper.make_node('Unique', ['x'], ['y'], name='uniq')], [x], [y])
    [problem] = check_tensorrt_compat(model)
    assert "Unique 'uniq'" in problem and 'not supported' in problem
    with pytest.raises(ExportError, match='not TensorRT-compatible.*Unique'):
        assert_tensorrt_compatible(model)


def test_unsupported_op_forms_fail():
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, None)
    scales = helper.make_tensor('scales', TensorProto.FLOAT, [4], [1, 1, 2, 2])
    resize = helper.make_node('Resize', ['x', '', 'scales'], ['y'], name='up', mode='cubic')
    [problem] = check_tensorrt_compat(_model([resize], [x], [y], [scales]))
    assert "Resize 'up'" in problem and 'cubic' in problem
    custom = helper.make_node('MyPlugin', ['x'], ['y'], name='p', domain='mmcv')
    [problem] = check_tensorrt_compat(_model([custom], [x], [y]))
    assert 'mmcv::MyPlugin' in problem


def test_the_suite_holds_every_export_to_these_rules():
    import deploy.apis.export as export_job
    from deploy.export import onnx_export

    # conftest wraps the exporter before anything imports it by name
    assert hasattr(onnx_export.export_onnx, '__wrapped__')
    assert export_job.export_onnx is onnx_export.export_onnx
