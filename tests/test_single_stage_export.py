"""FCOS, FSAF, SSD and YOLOv3 exported with both exporters (dynamic batch, height, width) equal
the eager reference in ONNX Runtime, compared by IoU matching.

SSD300's pipeline resizes every image to 300x300, so its graph has a dynamic batch at that fixed
size (the way ``tools/pytorch2onnx.py --dynamic-export`` exports it)."""

import onnx
import pytest
import torch
from conftest import random_batch
from helpers.small_single_stage import BATCH_SHAPES, MODELS, OTHER_SHAPE, batch_inputs, build_small

from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.postprocess import outputs_to_results


def _compare(model, backend, img, metas):
    inputs = batch_inputs(img, metas)
    ref = outputs_to_results(PyTorchBackend(model)(inputs), metas)
    test = outputs_to_results(backend(inputs), metas)
    assert all(len(r) > 0 for r in ref), 'the reference must produce detections'
    stats = match_result_lists(ref, test)
    assert stats.matched_fraction >= 0.99 and stats.exact_fraction >= 0.95, stats
    assert stats.max_score_err < 1e-4 and stats.max_box_err < 0.01, stats
    return stats


def _batch(name, shapes, seed=0):
    img, metas = random_batch(shapes, seed=seed)
    if name == 'ssd':  # no padding in SSD's pipeline: exactly 300x300
        img = img[..., :300, :300].contiguous()
    return img, metas


@pytest.fixture(scope='module')
def models():
    return {name: build_small(name) for name in MODELS}


#: torch.export cases of the default run; the others are marked slow (the dense-head export
#: path is exported with torch.export in the default run through the small RetinaNet,
#: tests/test_export.py; every model here is exported with TorchScript by default)
DEFAULT_DYNAMO = ()
CASES = [
    pytest.param(name, exporter, marks=[pytest.mark.slow])
    if exporter == 'dynamo' and name not in DEFAULT_DYNAMO
    else (name, exporter)
    for name in MODELS
    for exporter in ('dynamo', 'torchscript')
]


@pytest.mark.parametrize('name,exporter', CASES)
def test_dynamic_export_matches_eager(models, name, exporter, tmp_path):
    model = models[name]
    fixed_size = name == 'ssd'
    img, metas = _batch(name, BATCH_SHAPES[name])
    path = tmp_path / f'{name}.onnx'
    export_onnx(
        model,
        img,
        torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32),
        path,
        exporter=exporter,
        dynamic=True,
        dynamic_size=not fixed_size,
    )
    graph = onnx.load(str(path))
    assert {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'}, 'no custom op domains'
    assert 'NonMaxSuppression' in {n.op_type for n in graph.graph.node}
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == (['batch', 3, 300, 300] if fixed_size else ['batch', 3, 'height', 'width'])
    backend = OnnxRuntimeBackend(path)
    _compare(model, backend, img, metas)  # batch 2, the traced size
    other = BATCH_SHAPES[name][0] if fixed_size else OTHER_SHAPE[name]
    _compare(model, backend, *_batch(name, [other], seed=1))  # batch 1 (another size)
