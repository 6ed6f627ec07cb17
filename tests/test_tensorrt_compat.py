"""TensorRT compatibility rules on CPU: hand-made graphs that break each rule, and the real export.

The module sets no environment globally; the RetinaNet export below turns the export-time check
on (``DEPLOY_CHECK_TENSORRT_COMPAT=1``) only around its own export.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import random_batch
from onnx import TensorProto, helper

from deploy.backends.tensorrt.compat import (
    TOPK_MAX_K,
    assert_tensorrt_compatible,
    check_tensorrt_compat,
)
from deploy.backends.tensorrt.precision import convert_to_mixed_fp16
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


# --------------------------------------------------------------------------------------------
# the shipped model: RetinaNet, exported once (dynamic, dynamo) with the export-time check on
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def retinanet_onnx(small_retinanet_onnx):
    # Exported with the export-time check on (the suite sets DEPLOY_CHECK_TENSORRT_COMPAT).
    return small_retinanet_onnx('dynamo')


def test_retinanet_export_is_tensorrt_compatible(retinanet_onnx):
    model = onnx.load(str(retinanet_onnx))
    assert check_tensorrt_compat(model) == []
    # At a tiny profile minimum every TopK k is still clamped to its axis.
    assert check_tensorrt_compat(model, {'input': [1, 3, 32, 32], 'img_shape': [1, 2]}) == []


def test_retinanet_fp16_conversion_keeps_nms_fp32(retinanet_onnx, small_retinanet):
    from deploy.backends.onnxruntime import OnnxRuntimeBackend
    from deploy.evaluation.parity import match_result_lists
    from deploy.postprocess import outputs_to_results

    model = onnx.load(str(retinanet_onnx))
    half = convert_to_mixed_fp16(model)
    onnx.checker.check_model(half)
    assert check_tensorrt_compat(half) == []
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in onnx.shape_inference.infer_shapes(half).graph.value_info
    }
    convs = [n for n in half.graph.node if n.op_type == 'Conv']
    assert convs and all(types[n.output[0]] == TensorProto.FLOAT16 for n in convs)
    [nms] = [n for n in half.graph.node if n.op_type == 'NonMaxSuppression']
    assert [types[i] for i in nms.input[:2]] == [TensorProto.FLOAT, TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [
        o.type.tensor_type.elem_type for o in model.graph.output
    ]
    # Runs in ONNX Runtime on CPU and finds (nearly) the same detections as FP32.
    img, metas = random_batch([(160, 224)], seed=3)
    inputs = dict(input=img.numpy(), img_shape=np.asarray([[160, 224]], np.float32))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        half.SerializeToString(), options, providers=['CPUExecutionProvider']
    )
    out = dict(zip([o.name for o in half.graph.output], session.run(None, inputs)))
    assert out['dets'].dtype == np.float32 and out['labels'].dtype == np.int64
    ref = outputs_to_results(OnnxRuntimeBackend(retinanet_onnx, num_threads=1)(inputs), metas)
    test = outputs_to_results(out, metas)
    stats = match_result_lists(ref, test)
    assert stats.num_ref > 0 and stats.matched_fraction >= 0.8, stats
