"""The small RetinaNet's export: clipping, static shapes, verification rows, refusals, and its
TensorRT-compatible and FP16 forms. (Every model's export against eager, both exporters:
``test_export_parity.py``.)"""

import numpy as np
import onnx
import pytest
import torch
from conftest import random_batch
from onnx import TensorProto

from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.backends.tensorrt.compat import check_tensorrt_compat
from deploy.backends.tensorrt.precision import convert_to_mixed_fp16
from deploy.errors import BackendError, ExportError
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.export.verify import VerifyCase, verify_backend
from deploy.postprocess import outputs_to_results


def _inputs(img, metas):
    shapes = np.asarray([m['img_shape'] for m in metas], np.float32)
    return dict(input=img.numpy(), img_shape=shapes)


def _compare(model, backend, img, metas):
    inputs = _inputs(img, metas)
    ref = outputs_to_results(PyTorchBackend(model)(inputs), metas)
    test = outputs_to_results(backend(inputs), metas)
    assert all(len(r) > 0 for r in ref), 'the reference must produce detections'
    stats = match_result_lists(ref, test)
    assert stats.matched_fraction >= 0.99 and stats.exact_fraction >= 0.95, stats
    assert stats.max_score_err < 1e-4 and stats.max_box_err < 0.01, stats
    return stats


def test_deploy_path_equals_eager(small_retinanet):
    """The traceable batched path selects exactly what the per-image reference selects."""
    model, _ = small_retinanet
    img, metas = random_batch([(300, 400), (256, 380)])
    inputs = _inputs(img, metas)
    ref = outputs_to_results(PyTorchBackend(model)(inputs), metas)
    deploy = outputs_to_results(PyTorchBackend(model, mode='deploy')(inputs), metas)
    assert all(len(r) > 0 for r in ref)
    stats = match_result_lists(ref, deploy)
    assert stats.matched == stats.num_ref == stats.num_test and stats.max_score_err < 1e-6


def test_clipping_uses_real_image_shape(small_retinanet, tmp_path):
    """Boxes are clipped at the real image border, not at the padded input border."""
    model, _ = small_retinanet
    img, metas = random_batch([(200, 250)], pad_to=(320, 416))
    outputs = PyTorchBackend(model, mode='deploy')(_inputs(img, metas))
    valid = outputs['labels'][0] >= 0
    boxes = outputs['dets'][0][valid]
    assert len(boxes) > 0
    assert boxes[:, 2].max() <= 250 + 1e-3 and boxes[:, 3].max() <= 200 + 1e-3


def test_static_export_has_fixed_input(small_retinanet, tmp_path):
    model, _ = small_retinanet
    img, metas = random_batch([(256, 320)])
    path = tmp_path / 'static.onnx'
    export_onnx(model, img, torch.tensor([[256.0, 320.0]]), path, exporter='torchscript')
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 256, 320]
    _compare(model, OnnxRuntimeBackend(path), img, metas)


def test_verify_rows_pass_and_refuse_empty_reference(small_retinanet, tmp_path):
    model, _ = small_retinanet
    img, metas = random_batch([(256, 320)])
    path = tmp_path / 'static.onnx'
    export_onnx(model, img, torch.tensor([[256.0, 320.0]]), path, exporter='torchscript')
    raw = tmp_path / 'raw.onnx'
    export_onnx(model, img, None, raw, exporter='torchscript', skip_postprocess=True)
    rows = verify_backend(
        model,
        OnnxRuntimeBackend(path),
        [VerifyCase('a', img, metas)],
        raw_backend=OnnxRuntimeBackend(raw),
    )
    assert rows[0].raw_ok and rows[0].passed
    # A model that detects nothing cannot pass verification, however equal the outputs are.
    settings = model.bbox_head.test_cfg
    model.bbox_head.test_cfg = settings.replace(score_thr=1.1)
    try:
        rows = verify_backend(model, OnnxRuntimeBackend(path), [VerifyCase('a', img, metas)])
    finally:
        model.bbox_head.test_cfg = settings
    assert rows[0].stats.num_ref == 0 and not rows[0].passed


def test_low_opset_and_bad_exporter_are_refused(small_retinanet, tmp_path):
    model, _ = small_retinanet
    img, metas = random_batch([(256, 320)])
    with pytest.raises(ExportError, match='opset 11 is too low'):
        export_onnx(
            model, img, torch.tensor([[256.0, 320.0]]), tmp_path / 'm.onnx', opset_version=11
        )
    with pytest.raises(ExportError, match='unknown exporter'):
        export_onnx(
            model, img, torch.tensor([[256.0, 320.0]]), tmp_path / 'm.onnx', exporter='magic'
        )
    assert not list(tmp_path.iterdir()), 'no partial output may be left behind'


def test_corrupt_onnx_file_is_a_clear_error(tmp_path):
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not an onnx model at all')
    with pytest.raises(BackendError, match='cannot load'):
        OnnxRuntimeBackend(bad)
    with pytest.raises(BackendError, match='not found'):
        OnnxRuntimeBackend(tmp_path / 'missing.onnx')


# --------------------------------------------------------------------------------------------
# TensorRT compatibility of the shared RetinaNet export (dynamic, dynamo), here rather than in
# test_tensorrt_compat.py so that the file exporting it runs these too (one worker per file)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def retinanet_onnx(small_retinanet_onnx):
    # Exported with the export-time check on (tests/conftest.py wraps the exporter).
    return small_retinanet_onnx('dynamo')


def test_retinanet_export_is_tensorrt_compatible(retinanet_onnx):
    model = onnx.load(str(retinanet_onnx))
    assert check_tensorrt_compat(model) == []
    # At a tiny profile minimum every TopK k is still clamped to its axis.
    assert check_tensorrt_compat(model, {'input': [1, 3, 32, 32], 'img_shape': [1, 2]}) == []


def test_retinanet_fp16_conversion_keeps_nms_fp32(retinanet_onnx, small_retinanet):

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
    # Its detections against eager: test_export_parity.py (retinanet-dynamo-fp16).
