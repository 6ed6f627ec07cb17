"""The small DINO exported with dynamic batch, height and width: standard ops only (GridSample
for the deformable attention), TensorRT-compatible, batch invariance in ONNX Runtime, the same
detections in OpenVINO, and the same COCO AP as PyTorch at batch sizes 1 and 2. (Its exports
against eager, both exporters: rows of ``test_export_parity.py``.)"""

import json

import onnx
import pytest
import torch
from conftest import random_batch, write_pseudo_ground_truth
from helpers.export_parity import Row
from helpers.export_parity import exported as shared_export
from helpers.small_dino import (
    BATCH_INVARIANT,
    DINO_CFG,
    SMALL_DINO,
    batch_inputs,
    build_small_dino,
)

from deploy.apis.test import run_test
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.backends.tensorrt.compat import check_tensorrt_compat
from deploy.datasets.pipeline import rescale_size
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.models.checkpoint import save_checkpoint
from deploy.postprocess import outputs_to_results

#: (h, w) of the real images of each case: padded batches, another size, both orientations
CASES = [
    [(200, 280), (176, 250)],
    [(150, 230)],
    [(97, 130), (160, 100)],
    [(24, 30)],  # fewer tokens (15) than queries (30): the query count is computed
]
#: small test scale of the generated set (the config's is 1333 x 800)
TEST_SCALE = (320, 256)


def _export(model, path, exporter='torchscript') -> None:
    img, metas = random_batch(CASES[0])
    shapes = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
    export_onnx(model, img, shapes, path, exporter=exporter, dynamic=True)


@pytest.fixture(scope='module')
def exported():
    """The small DINO (MMDetection's batch semantics) and its TorchScript export, traced on a
    crop of the example smaller than the images it is then compared on (the export of the
    ``dino-torchscript`` row of test_export_parity.py, which compares it with eager)."""
    return shared_export(Row('dino', 'torchscript'))


def test_graph_is_standard_ops_and_tensorrt_compatible(exported):
    _, path = exported
    graph = onnx.load(str(path))
    assert {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'}, 'no custom op domains'
    ops = {n.op_type for n in graph.graph.node}
    assert 'GridSample' in ops and not {'NonMaxSuppression', 'RoiAlign'} & ops
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    min_shapes = {'input': [1, 3, 96, 96], 'img_shape': [1, 2]}
    assert check_tensorrt_compat(graph, min_shapes) == []


def test_batch_invariant_export_gives_each_image_its_result_alone(tmp_path):
    model = build_small_dino(**BATCH_INVARIANT)
    _export(model, tmp_path / 'dino.onnx')
    backend = OnnxRuntimeBackend(tmp_path / 'dino.onnx')
    img, metas = random_batch([(90, 150), (150, 120)])
    batched = outputs_to_results(backend(batch_inputs(img, metas)), metas)
    alone = []
    for i, (h, w) in enumerate(m['img_shape'] for m in metas):
        one_img, one_meta = img[i : i + 1, :, :h, :w].contiguous(), metas[i : i + 1]
        alone += outputs_to_results(
            PyTorchBackend(model)(batch_inputs(one_img, one_meta)), one_meta
        )
    stats = match_result_lists(alone, batched)
    assert stats.matched_fraction == 1.0 and stats.exact_fraction == 1.0, stats


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('dino_eval')
    paths = generate_synthetic_coco(root / 'data', num_train=0, num_val=4, seed=11)
    images = sorted(json.loads(paths['val'].read_text())['images'], key=lambda i: i['id'])
    sizes = [rescale_size(i['width'], i['height'], TEST_SCALE)[0] for i in images]
    assert sizes[0] != sizes[1] and sizes[2] != sizes[3], 'batches of 2 must pad'
    return paths


def test_onnxruntime_ap_equals_pytorch_at_each_batch_size(exported, val_set, tmp_path):
    """MMDetection's semantics: ONNX Runtime adds no AP gap to PyTorch's, at batch 1 and at
    batch 2 (where padding reaches the backbone and the masks), against the PyTorch batch-1
    run's own detections."""
    model, onnx_file = exported
    options = {
        **SMALL_DINO,
        'test_dataloader.dataset.data_root': '',
        'test_dataloader.dataset.ann_file': str(val_set['val']),
        'test_dataloader.dataset.data_prefix.img': str(val_set['val_img_prefix']),
        'test_dataloader.dataset.pipeline.1.scale': TEST_SCALE,
    }
    classes = tuple(c['name'] for c in CATEGORIES)
    ckpt = save_checkpoint(model, tmp_path / 'dino.pth', meta={'CLASSES': classes})
    kwargs = dict(num_workers=0, progress=False, logger=lambda *a: None)
    first = run_test(DINO_CFG, ckpt, 'pytorch', cfg_options=options, **kwargs)
    pseudo = write_pseudo_ground_truth(first, val_set['val'], tmp_path / 'pseudo.json')
    options['test_dataloader.dataset.ann_file'] = str(pseudo)
    aps = {}
    for backend, model_file in (('pytorch', ckpt), ('onnxruntime', onnx_file)):
        for batch_size in (1, 2):
            run = run_test(
                DINO_CFG,
                model_file,
                backend,
                cfg_options=options,
                metrics=('bbox',),
                batch_size=batch_size,
                **kwargs,
            )
            aps[backend, batch_size] = run.metrics['bbox_mAP']
    print('bbox mAP against the PyTorch batch-1 detections:', aps)
    assert aps['pytorch', 1] > 0.9, aps
    for batch_size in (1, 2):
        assert abs(aps['onnxruntime', batch_size] - aps['pytorch', batch_size]) <= 0.001, aps


def test_openvino_fp32_equals_pytorch(exported):
    """OpenVINO's CPU plugin runs the same graph (GridSample included) to the same detections."""
    pytest.importorskip('openvino')
    from deploy.backends.openvino import OpenVINOBackend

    model, path = exported
    img, metas = random_batch(CASES[0])
    inputs = batch_inputs(img, metas)
    ref = outputs_to_results(PyTorchBackend(model)(inputs), metas)
    test = outputs_to_results(OpenVINOBackend(path)(inputs), metas)
    stats = match_result_lists(ref, test)
    assert stats.matched_fraction == 1.0 and stats.exact_fraction == 1.0, stats


@pytest.mark.slow
def test_full_r50_dynamic_export_matches_eager(tmp_path):
    """DINO-4scale R50 itself (random weights that detect), a padded batch of two sizes."""
    from deploy.apis.model import init_detector
    from deploy.models.random_weights import make_detections_likely

    torch.manual_seed(0)
    model, _ = init_detector(str(DINO_CFG), logger=None)
    make_detections_likely(model.eval())
    _export(model, tmp_path / 'dino_r50.onnx')
    img, metas = random_batch([(480, 640), (416, 608)], seed=3)
    inputs = batch_inputs(img, metas)
    ref = outputs_to_results(PyTorchBackend(model)(inputs), metas)
    test = outputs_to_results(OnnxRuntimeBackend(tmp_path / 'dino_r50.onnx')(inputs), metas)
    assert all(len(r) == 300 for r in ref)
    stats = match_result_lists(ref, test)
    assert stats.matched_fraction == 1.0 and stats.exact_fraction == 1.0, stats
