"""CornerNet exported with both exporters (dynamic batch, height and width) equals the eager
reference in ONNX Runtime: every detection matched by IoU (scores to 1e-4), on the traced batch
of two differently sized images, one image of another size, and a batch of three; the graph
holds standard operators only (corner pooling's MaxPool and Loop, soft-NMS's Loop) and passes
the TensorRT check (conftest turns it on for every export); box AP of ONNX Runtime equals
PyTorch's on a generated data set (against the reference's own detections)."""

import numpy as np
import onnx
import pytest
import torch
from conftest import write_pseudo_ground_truth
from helpers.small_cornernet import CONFIG, SMALL_CORNERNET, build_small, random_images

from deploy.apis.test import run_test
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.config import get_preprocess_cfg
from deploy.datasets.pipeline import TestPipeline, collate
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.models.checkpoint import save_checkpoint
from deploy.postprocess import outputs_to_results

#: canvases 127 x 127 and 127 x 255 (the traced batch), then other sizes
TRACE_SHAPES = ((60, 50), (40, 140))
OTHER_CASES = {'another size': ((130, 90),), 'batch of 3': ((50, 60), (120, 40), (70, 70))}


def batch(model_cfg, shapes, seed=0):
    pipeline = TestPipeline(get_preprocess_cfg(model_cfg))
    img, metas = collate([pipeline(i) for i in random_images(seed, shapes)])
    inputs = dict(
        input=img.numpy(), img_shape=np.asarray([m['img_shape'] for m in metas], np.float32)
    )
    return inputs, metas


def compare(model, backend, inputs, metas):
    ref = outputs_to_results(PyTorchBackend(model)(inputs), metas)
    test = outputs_to_results(backend(inputs), metas)
    assert all(len(r) > 0 for r in ref), 'the reference must produce detections'
    stats = match_result_lists(ref, test)
    assert stats.matched_fraction == 1.0 and stats.exact_fraction == 1.0, stats
    # scores differ where the conv stacks' float sums do (~1e-5); boxes are integers + offsets
    assert stats.max_score_err < 1e-4 and stats.max_box_err < 1e-3, stats


EXPORTERS = ('dynamo', 'torchscript')


@pytest.fixture(scope='module')
def small():
    return build_small()


@pytest.fixture(scope='module')
def exports(small, tmp_path_factory):
    """The small model exported once with each exporter: ``exporter -> path``."""
    model, cfg = small
    inputs, _ = batch(cfg, TRACE_SHAPES)
    root = tmp_path_factory.mktemp('cornernet')
    for exporter in EXPORTERS:
        export_onnx(
            model,
            torch.from_numpy(inputs['input']),
            torch.from_numpy(inputs['img_shape']),
            root / f'{exporter}.onnx',
            exporter=exporter,
            dynamic=True,
        )
    return {exporter: root / f'{exporter}.onnx' for exporter in EXPORTERS}


@pytest.mark.parametrize('exporter', EXPORTERS)
def test_graph_holds_standard_ops_and_loops(exports, exporter):
    graph = onnx.load(str(exports[exporter]))
    assert {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'} and not graph.functions
    ops = {n.op_type for n in graph.graph.node}
    assert {'Loop', 'MaxPool', 'TopK'} <= ops
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', 3, 'height', 'width']


@pytest.mark.parametrize('case', ['traced', *OTHER_CASES])
@pytest.mark.parametrize('exporter', EXPORTERS)
def test_onnxruntime_equals_eager(small, exports, exporter, case):
    model, cfg = small
    shapes = TRACE_SHAPES if case == 'traced' else OTHER_CASES[case]
    compare(model, OnnxRuntimeBackend(exports[exporter]), *batch(cfg, shapes, seed=len(case)))


@pytest.mark.parametrize('exporter', EXPORTERS)
def test_onnxruntime_box_ap_equals_pytorch(small, exports, exporter, tmp_path_factory):
    """AP parity on 4 generated images, shrunk 4x by the pipeline's resize factor (canvases of
    127 to 255 pixels): PyTorch scores its own detections, ONNX Runtime loses AP for each it gets
    wrong."""
    model, _ = small
    tmp_path = tmp_path_factory.mktemp('cornernet_ap')
    data = generate_synthetic_coco(tmp_path / 'data', num_train=0, num_val=4, seed=3)
    ckpt = save_checkpoint(
        model, tmp_path / 'small.pth', meta={'CLASSES': tuple(c['name'] for c in CATEGORIES)}
    )
    options = {
        **SMALL_CORNERNET,
        'data.test.ann_file': str(data['val']),
        'data.test.img_prefix': str(data['val_img_prefix']),
        'data.test.pipeline.1.scale_factor': 0.25,
    }
    kwargs = dict(
        cfg_options=options,
        metrics=('bbox',),
        batch_size=2,
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    first = run_test(CONFIG, ckpt, 'pytorch', **kwargs)
    pseudo = write_pseudo_ground_truth(first, data['val'], tmp_path / 'pseudo.json')
    kwargs['cfg_options'] = dict(options, **{'data.test.ann_file': str(pseudo)})
    pt = run_test(CONFIG, ckpt, 'pytorch', **kwargs)
    ort = run_test(CONFIG, exports[exporter], 'onnxruntime', **kwargs)
    assert sum(len(r) for r in pt.results) > 0, 'the reference must detect something'
    assert pt.metrics['bbox_mAP'] > 0.2, pt.metrics
    for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75'):
        assert abs(pt.metrics[key] - ort.metrics[key]) <= 0.001, (key, pt.metrics, ort.metrics)


def test_preprocessing_in_the_graph_is_refused(small, tmp_path):
    """The in-graph pipeline has no center padding: refused in one line, never a wrong graph."""
    from deploy.errors import ExportError

    model, _ = small
    with pytest.raises(ExportError, match='RandomCenterCropPad: export without'):
        export_onnx(
            model,
            torch.zeros(2, 60, 50, 3, dtype=torch.uint8),
            torch.zeros(2, 2),
            tmp_path / 'x.onnx',
            preprocess_in_graph=model.spec.preprocess,
            dynamic=True,
        )


def test_opset_below_18_is_refused(small, tmp_path):
    """The Loop bodies are opset-18 functions: a lower opset is one clear error."""
    from deploy.errors import ExportError

    model, cfg = small
    inputs, _ = batch(cfg, TRACE_SHAPES)
    with pytest.raises(ExportError, match='needs ONNX opset >= 18'):
        export_onnx(
            model,
            torch.from_numpy(inputs['input']),
            torch.from_numpy(inputs['img_shape']),
            tmp_path / 'x.onnx',
            exporter='torchscript',
            opset_version=17,
        )
