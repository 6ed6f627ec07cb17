"""Two-stage detectors exported with both exporters and both RoI modes, against eager in ORT.

Every case: dynamic export traced at batch 2, then ONNX Runtime on that batch, on another size at
batch 1, and on a batch of 3 with different real image shapes; detections matched by IoU, mask
probabilities compared on the matched detections.
"""

import onnx
import pytest
import torch
from conftest import random_batch
from helpers.parity import inputs_of, matched_mask_error
from helpers.small_two_stage import CONFIGS, build_small
from pycocotools import mask as mask_utils

from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.errors import ExportError
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.postprocess import outputs_to_results

CASES = [([(300, 400), (256, 380)], 0), ([(224, 160)], 1), ([(200, 300), (320, 250), (96, 128)], 2)]


def _check_graph(path, roi_mode: str, with_masks: bool) -> None:
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'}, 'no custom op domains'
    ops = [n.op_type for n in graph.graph.node]
    assert 'NonMaxSuppression' in ops and 'RoiAlign' in ops
    assert ('NonZero' in ops) == (roi_mode == 'nonzero')
    for node in graph.graph.node:
        if node.op_type == 'RoiAlign':
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs['coordinate_transformation_mode'] == b'half_pixel'
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(graph.graph.input) + list(graph.graph.output)
    }
    assert dims['input'] == ['batch', 3, 'height', 'width']
    assert dims['dets'] == ['batch', 'num_dets', 5]
    if with_masks:
        assert dims['masks'] == ['batch', 'num_dets', 28, 28]


#: torch.export cases of the default run; the rest are marked slow (the masked RoI mode's
#: torch.export graph is in the default run through PointRend's, tests/test_point_rend_export.py)
QUICK_DYNAMO = {('mask_rcnn_r50_fpn_1x_coco', 'nonzero')}
MATRIX = [
    pytest.param(
        stem,
        roi_mode,
        exporter,
        marks=[pytest.mark.slow]
        if exporter == 'dynamo' and (stem, roi_mode) not in QUICK_DYNAMO
        else [],
    )
    for stem in sorted(CONFIGS)
    for roi_mode in ('masked', 'nonzero')
    for exporter in ('dynamo', 'torchscript')
]


@pytest.mark.parametrize('stem,roi_mode,exporter', MATRIX)
def test_dynamic_export_matches_eager(tmp_path, stem, roi_mode, exporter):
    model, _ = build_small(stem, roi_mode)
    img, metas = random_batch(CASES[0][0])
    path = tmp_path / 'model.onnx'
    export_onnx(
        model,
        img,
        torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32),
        path,
        exporter=exporter,
        dynamic=True,
    )
    with_masks = 'mask' in stem
    _check_graph(path, roi_mode, with_masks)
    backend = OnnxRuntimeBackend(path)
    reference = PyTorchBackend(model)
    for shapes, seed in CASES:
        img, metas = random_batch(shapes, seed=seed)
        inputs = inputs_of(img, metas)
        expected, actual = reference(inputs), backend(inputs)
        ref = outputs_to_results(expected, metas)
        test = outputs_to_results(actual, metas)
        assert all(len(r) > 0 for r in ref), 'the reference must produce detections'
        stats = match_result_lists(ref, test)
        assert stats.matched_fraction >= 0.99, (shapes, stats)
        assert stats.max_score_err < 1e-4 and stats.max_box_err < 0.01, (shapes, stats)
        if with_masks:
            assert matched_mask_error(expected, actual) < 1e-4
            assert sum(int(mask_utils.area(r.masks).sum()) for r in ref) > 0, 'empty masks'


def test_low_opset_is_refused(tmp_path):
    model, _ = build_small('faster_rcnn_r50_fpn_1x_coco')
    img, metas = random_batch([(256, 320)])
    with pytest.raises(ExportError, match='opset 15 is too low'):
        export_onnx(
            model,
            img,
            torch.tensor([[256.0, 320.0]]),
            tmp_path / 'm.onnx',
            opset_version=15,
            exporter='torchscript',
        )
