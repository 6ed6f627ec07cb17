"""Soft-NMS: the eager op against a literal transcription of MMCV's CPU kernel (with
``batched_nms``'s class offsets), and the exported ``Loop`` (both exporters) against the eager op,
batched. Box coordinates are integers, so the class offsets change no float rounding and every
comparison can be exact."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers.mmcv_soft_nms import F32, mmcv_batched_soft_nms
from onnx import TensorProto, helper

from deploy.backends.tensorrt.compat import check_tensorrt_compat
from deploy.export import onnx_ops
from deploy.ops.soft_nms import METHODS, batched_soft_nms, soft_nms, soft_nms_eager


def random_case(rng, n, num_classes=3, tied=False):
    xy = rng.integers(0, 60, (n, 2))
    wh = rng.integers(1, 30, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(F32)
    scores = (rng.integers(1, 8, n) / 8 if tied else rng.random(n)).astype(F32)
    return boxes, scores, rng.integers(0, num_classes, n)


def check_against_mmcv(boxes, scores, labels, method, max_num=-1, **params):
    params = dict(dict(iou_threshold=0.3, sigma=0.5, min_score=0.05), **params)
    ref_scores, ref_keep = mmcv_batched_soft_nms(boxes, scores, labels, method=method, **params)
    if max_num > 0:
        ref_scores, ref_keep = ref_scores[:max_num], ref_keep[:max_num]
    dets, out_labels = soft_nms(
        torch.from_numpy(boxes),
        torch.from_numpy(scores),
        torch.from_numpy(labels),
        method=method,
        max_num=max_num,
        **params,
    )
    np.testing.assert_array_equal(dets[:, :4].numpy(), boxes[ref_keep])
    np.testing.assert_array_equal(out_labels.numpy(), labels[ref_keep])
    np.testing.assert_allclose(dets[:, 4].numpy(), ref_scores, rtol=1e-6, atol=1e-7)
    return dets


@pytest.mark.parametrize('method', list(METHODS))
@pytest.mark.parametrize('tied', [False, True], ids=['distinct', 'tied'])
def test_eager_matches_mmcv_kernel(method, tied):
    rng = np.random.default_rng(len(method) + tied)
    for _ in range(40):
        check_against_mmcv(*random_case(rng, int(rng.integers(1, 40)), tied=tied), method)


def test_ties_follow_mmcv_array_order():
    """Equal scores: MMCV takes the first in its *array*, whose order its swaps change -- not
    the lowest index. Picking box 2 swaps it with box 0, so box 1 now comes before box 0."""
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], F32)
    scores = np.array([0.5, 0.5, 0.9], F32)
    labels = np.zeros(3, np.int64)
    dets = check_against_mmcv(boxes, scores, labels, 'gaussian')
    np.testing.assert_array_equal(dets[:, 0].numpy(), [40, 20, 0])


def test_empty_input():
    dets, labels = soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert dets.shape == (0, 5) and labels.shape == (0,)


@pytest.mark.parametrize('method', list(METHODS))
def test_all_scores_below_min_score(method):
    """Only the first pick escapes MMCV's min_score test (it is applied to the boxes after it)."""
    boxes, _, labels = random_case(np.random.default_rng(3), 12)
    scores = np.linspace(0.001, 0.04, 12).astype(F32)
    dets = check_against_mmcv(boxes, scores, labels, method)
    assert len(dets) == 1 and dets[0, 4] == scores.max()


@pytest.mark.parametrize('method', list(METHODS))
def test_more_boxes_than_max_num(method):
    boxes, scores, labels = random_case(np.random.default_rng(4), 200, tied=True)
    dets = check_against_mmcv(boxes, scores, labels, method, max_num=25, min_score=1e-3)
    assert len(dets) == 25
    assert (np.diff(dets[:, 4].numpy()) <= 0).all(), 'picks come out in non-increasing order'


def batch_case(seed=0, batch=4, num=60):
    """A batch with different numbers of candidates per image (one image has none), so images
    run out of boxes at different picks."""
    rng = np.random.default_rng(seed)
    parts = [random_case(rng, num, tied=bool(i % 2)) for i in range(batch)]
    boxes, scores, labels = (np.stack(p) for p in zip(*parts))
    valid = rng.random((batch, num)) < np.linspace(0.0, 0.9, batch)[:, None]
    return boxes, scores, labels, valid


def test_batch_equals_each_image_alone():
    boxes, scores, labels, valid = batch_case()
    dets, out_labels = batched_soft_nms(
        *(torch.from_numpy(a) for a in (boxes, scores, labels, valid)),
        0.3,
        0.5,
        0.05,
        'gaussian',
        30,
    )
    for i in range(len(boxes)):
        keep = valid[i]
        alone, alone_labels = soft_nms(
            *(torch.from_numpy(a[i][keep]) for a in (boxes, scores, labels)),
            0.3,
            0.5,
            0.05,
            'gaussian',
            max_num=30,
        )
        n = len(alone)
        assert torch.equal(dets[i, :n], alone) and torch.equal(out_labels[i, :n], alone_labels)
        assert (out_labels[i, n:] == -1).all() and (dets[i, n:] == 0).all()
    assert (out_labels[0] == -1).all(), 'an image without candidates has padding rows only'


class AllMethods(torch.nn.Module):
    """One graph, three soft-NMS ops (the methods are constants of the graph)."""

    def forward(self, boxes, scores, labels, valid):
        outputs = []
        for method in METHODS:
            outputs += batched_soft_nms(boxes, scores, labels, valid, 0.3, 0.5, 0.05, method, 30)
        return tuple(outputs)


@pytest.fixture(scope='module', params=['dynamo', 'torchscript'])
def exported(request, tmp_path_factory):
    path = tmp_path_factory.mktemp('soft_nms') / f'{request.param}.onnx'
    args = tuple(torch.from_numpy(a) for a in batch_case(seed=1, batch=2, num=50))
    names = ['boxes', 'scores', 'labels', 'valid']
    outputs = [f'{k}_{m}' for m in METHODS for k in ('dets', 'labels')]
    module = AllMethods().eval()
    if request.param == 'dynamo':
        batch, num = torch.export.Dim('batch', min=1, max=64), torch.export.Dim('n', max=8192)
        program = torch.onnx.export(
            module,
            args,
            None,
            dynamo=True,
            external_data=False,
            opset_version=18,
            input_names=names,
            output_names=outputs,
            dynamic_shapes={
                'boxes': {0: batch, 1: num},
                **{k: {0: batch, 1: num} for k in names[1:]},
            },
            custom_translation_table=onnx_ops.onnx_translation_table(),
        )
        program.save(str(path), external_data=False)
    else:
        onnx_ops.register_legacy_symbolics(18)
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=18,
            input_names=names,
            output_names=outputs,
            dynamic_axes={k: {0: 'batch', 1: 'n'} for k in names},
        )
    model = onnx_ops.inline_local_functions(onnx.load(str(path)))
    return model, ort.InferenceSession(model.SerializeToString())


def test_graph_is_a_loop_of_standard_ops(exported):
    model, _ = exported
    assert {o.domain for o in model.opset_import} <= {'', 'ai.onnx'} and not model.functions
    loops = [n for n in model.graph.node if n.op_type == 'Loop']
    assert len(loops) == len(METHODS)
    constants = {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == 'Constant' for o in n.output
    }
    assert all(loop.input[0] not in constants for loop in loops), 'the trip count is computed'
    assert check_tensorrt_compat(model) == []


@pytest.mark.parametrize(
    'batch, num, seed',
    [(2, 50, 1), (4, 60, 2), (1, 1, 3), (3, 10, 4), (2, 400, 5)],
    ids=['traced', 'ragged-batch', 'one-box', 'fewer-than-max', 'many-boxes'],
)
def test_graph_equals_eager(exported, batch, num, seed):
    _, sess = exported
    arrays = batch_case(seed=seed, batch=batch, num=num)
    outputs = sess.run(None, dict(zip(['boxes', 'scores', 'labels', 'valid'], arrays)))
    tensors = [torch.from_numpy(a) for a in arrays]
    for m, method in enumerate(METHODS):
        dets, labels = soft_nms_eager(*tensors, 0.3, 0.5, 0.05, METHODS[method], 30)
        np.testing.assert_array_equal(outputs[2 * m + 1], labels.numpy(), err_msg=method)
        np.testing.assert_allclose(outputs[2 * m], dets.numpy(), rtol=1e-6, atol=1e-7)


def test_tensorrt_rule_for_scan_outputs():
    """A Loop with a scan output needs a constant trip count (TensorRT fixes its length)."""
    body = helper.make_graph(
        [
            helper.make_node('Identity', ['cond_in'], ['cond_out']),
            helper.make_node('Identity', ['x'], ['scan']),
        ],
        'body',
        [
            helper.make_tensor_value_info('i', TensorProto.INT64, []),
            helper.make_tensor_value_info('cond_in', TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info('cond_out', TensorProto.BOOL, []),
            helper.make_tensor_value_info('scan', TensorProto.FLOAT, [2]),
        ],
    )

    def model(trip_count_node):
        graph = helper.make_graph(
            [trip_count_node, helper.make_node('Loop', ['m', ''], ['y'], body=body)],
            'g',
            [helper.make_tensor_value_info('x', TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])

    computed = model(helper.make_node('Size', ['x'], ['m']))
    constant = model(helper.make_node('Constant', [], ['m'], value_int=3))
    assert any('scan output' in p for p in check_tensorrt_compat(computed))
    assert check_tensorrt_compat(constant) == []
