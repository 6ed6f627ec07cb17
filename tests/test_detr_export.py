"""DETR exported with both exporters (dynamic batch, height and width) equals the eager reference
in ONNX Runtime on batches of differently sized images, compared by IoU matching."""

import onnx
import pytest
import torch
from conftest import random_batch
from helpers.small_detr import batch_inputs, build_small

from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.postprocess import outputs_to_results

#: (h, w) of the real images of each case: padded batches, another size, both orientations
CASES = [
    [(200, 280), (176, 250)],
    [(150, 230)],
    [(97, 130), (160, 100)],
]


@pytest.fixture(scope='module')
def small_detr():
    return build_small()


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_dynamic_export_matches_eager(small_detr, exporter, tmp_path):
    img, metas = random_batch(CASES[0])
    path = tmp_path / f'detr_{exporter}.onnx'
    export_onnx(
        small_detr,
        img,
        torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32),
        path,
        exporter=exporter,
        dynamic=True,
    )
    # the exporters leave the model as they found it (the TorchScript one used to switch it to
    # training mode, turning DETR's dropout on)
    assert not any(m.training for m in small_detr.modules())
    graph = onnx.load(str(path))
    assert {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'}, 'no custom op domains'
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', 3, 'height', 'width']
    backend = OnnxRuntimeBackend(path)
    for seed, shapes in enumerate(CASES):
        img, metas = random_batch(shapes, seed=seed)
        inputs = batch_inputs(img, metas)
        ref = outputs_to_results(PyTorchBackend(small_detr)(inputs), metas)
        test = outputs_to_results(backend(inputs), metas)
        assert all(len(r) == 10 for r in ref), 'DETR keeps max_per_img detections'
        stats = match_result_lists(ref, test)
        assert stats.matched_fraction == 1.0 and stats.exact_fraction == 1.0, (shapes, stats)
        # random weights sharpened to detect amplify float drift a little (trained: ~1e-6)
        assert stats.max_score_err < 1e-4 and stats.max_box_err < 0.01, (shapes, stats)
