"""PointRend exported with both exporters and both RoI modes, against eager in ONNX Runtime, and
its box and mask AP in ONNX Runtime against PyTorch's.

Every export is dynamic (traced at batch 2) and runs in ONNX Runtime on that batch, on another
size at batch 1 and on a batch of 3 with different real image shapes; detections are matched by
IoU and their pasted masks compared. The graph holds the subdivision in standard ops only
(``Resize``, ``TopK``, ``GridSample``, ``ScatterElements``) and passes the TensorRT check.

AP is measured against the reference's own detections and masks (``write_pseudo_ground_truth``):
random weights score about 0 AP on the real annotations, which would make equality vacuous.
"""

import json

import numpy as np
import onnx
import pytest
import torch
from conftest import write_pseudo_ground_truth
from helpers.parity import inputs_of
from helpers.small_point_rend import CONFIG, build_small, pixel_batch, small_options
from pycocotools import mask as mask_utils

from deploy.apis.test import run_test
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.backends.tensorrt.compat import check_tensorrt_compat
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.evaluation.coco_metric import evaluate_coco
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.models.checkpoint import save_checkpoint
from deploy.postprocess import outputs_to_results

CASES = [([(300, 400), (256, 380)], 0), ([(224, 160)], 1), ([(200, 300), (320, 250), (96, 128)], 2)]
#: (exporter, RoI mode): one of each by default, the rest of the matrix marked slow
#: (the two-stage tests run the nonzero mode with torch.export by default, this the masked one)
EXPORTS = [
    pytest.param('torchscript', 'nonzero'),
    pytest.param('dynamo', 'masked'),
    pytest.param('dynamo', 'nonzero', marks=pytest.mark.slow),
    pytest.param('torchscript', 'masked', marks=pytest.mark.slow),
]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """``(exporter, roi_mode) -> (model, onnx path)``, each export made once per module."""
    cache = {}
    root = tmp_path_factory.mktemp('point_rend_export')

    def get(exporter: str, roi_mode: str):
        if (exporter, roi_mode) not in cache:
            model, _ = build_small(roi_mode)
            img, metas = pixel_batch(CASES[0][0])
            path = root / f'{exporter}_{roi_mode}.onnx'
            img_shape = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
            export_onnx(model, img, img_shape, path, exporter=exporter, dynamic=True)
            cache[exporter, roi_mode] = model, path
        return cache[exporter, roi_mode]

    return get


def _check_graph(path, roi_mode: str) -> None:
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'}, 'no custom op domains'
    nodes = graph.graph.node
    ops = {n.op_type for n in nodes}
    assert {'GridSample', 'TopK', 'ScatterElements', 'RoiAlign', 'NonMaxSuppression'} <= ops
    assert ('NonZero' in ops) == (roi_mode == 'nonzero')
    attrs = [
        (n.op_type, {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})
        for n in nodes
    ]
    # point_sample: bilinear, zero padding, align_corners=False
    for op, a in attrs:
        if op == 'GridSample':
            assert (a['mode'], a['padding_mode'], a['align_corners']) == (b'bilinear', b'zeros', 0)
    # the subdivision's 2x upsampling: linear, half-pixel (the FPN's are nearest)
    linear = [a for op, a in attrs if op == 'Resize' and a['mode'] == b'linear']
    assert len(linear) == 3 and all(
        a['coordinate_transformation_mode'] == b'half_pixel' for a in linear
    )
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(graph.graph.input) + list(graph.graph.output)
    }
    assert dims['input'] == ['batch', 3, 'height', 'width']
    assert dims['masks'] == ['batch', 'num_dets', 56, 56]
    # TensorRT: every TopK k (the 784 uncertain points among them) bounded below its limit of
    # 3840, and within its axis at the smallest input of a profile (evaluated).
    assert check_tensorrt_compat(graph, {'input': [1, 3, 64, 64], 'img_shape': [1, 2]}) == []


@pytest.mark.parametrize('exporter,roi_mode', EXPORTS)
def test_dynamic_export_matches_eager(exported, exporter, roi_mode):
    model, path = exported(exporter, roi_mode)
    _check_graph(path, roi_mode)
    backend = OnnxRuntimeBackend(path)
    reference = PyTorchBackend(model)
    for shapes, seed in CASES:
        img, metas = pixel_batch(shapes, seed=seed)
        inputs = inputs_of(img, metas)
        expected, actual = reference(inputs), backend(inputs)
        ref = outputs_to_results(expected, metas)
        test = outputs_to_results(actual, metas)
        assert all(len(r) > 0 for r in ref), 'the reference must produce detections'
        assert sum(int(mask_utils.area(r.masks).sum()) for r in ref) > 0, 'empty masks'
        stats = match_result_lists(ref, test)
        assert stats.matched_fraction >= 0.99 and stats.exact_fraction >= 0.99, (shapes, stats)
        assert stats.max_score_err < 1e-4 and stats.max_box_err < 0.01, (shapes, stats)
        assert stats.min_mask_iou >= 0.99, (shapes, stats)
        # The grids: equal up to rounding, except where a near-tie of uncertainties picked a
        # different point to refine (a handful of the 56 x 56 cells, if any).
        rows = expected['labels'] >= 0
        assert np.array_equal(rows, actual['labels'] >= 0)
        diff = np.abs(expected['masks'][rows] - actual['masks'][rows])
        assert (diff > 1e-4).mean() < 1e-3, (shapes, diff.max())


# --------------------------------------------------------------------------------------------
# AP parity on the generated data set
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def reference_run(tmp_path_factory):
    """The small model's checkpoint, its PyTorch run, and the pseudo ground truth made of it."""
    root = tmp_path_factory.mktemp('point_rend_eval')
    paths = generate_synthetic_coco(root / 'data', num_train=0, num_val=6, seed=5)
    options = dict(
        small_options(),
        **{
            'data.test.ann_file': str(paths['val']),
            'data.test.img_prefix': str(root / 'data' / 'val2017'),
            'data.test.pipeline.1.img_scale': (512, 320),
        },
    )
    model, _ = build_small()
    ckpt = root / 'small.pth'
    save_checkpoint(model, ckpt, meta={'CLASSES': tuple(c['name'] for c in CATEGORIES)})
    kwargs = dict(
        cfg_options=options,
        metrics=('bbox', 'segm'),
        batch_size=2,
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    pt = run_test(str(CONFIG), ckpt, 'pytorch', **dict(kwargs, metrics=()))
    pseudo = write_pseudo_ground_truth(pt, paths['val'], root / 'pseudo.json')
    # The reference scored against its own detections (the same as running it again).
    cat_ids = sorted(c['id'] for c in json.loads(pseudo.read_text())['categories'])
    metrics = evaluate_coco(pseudo, pt.results, pt.img_ids, cat_ids, ('bbox', 'segm'), logger=None)
    kwargs['cfg_options'] = dict(options, **{'data.test.ann_file': str(pseudo)})
    return dict(results=pt.results, metrics=metrics, kwargs=kwargs)


@pytest.mark.parametrize('exporter,roi_mode', EXPORTS[:2])
def test_onnxruntime_ap_equals_pytorch(exported, reference_run, exporter, roi_mode):
    """Box and mask AP within 0.001 (same batch size: batching pads images to a common size,
    which changes what the backbone sees near the borders, for any backend)."""
    pt = reference_run['metrics']
    _, path = exported(exporter, roi_mode)
    ort = run_test(str(CONFIG), path, 'onnxruntime', **reference_run['kwargs'])
    assert sum(len(r) for r in reference_run['results']) > 0, 'the reference must detect something'
    assert all(isinstance(r.masks, list) for r in ort.results), 'masks stream as RLE'
    assert pt['bbox_mAP'] > 0.2 and pt['segm_mAP'] > 0.2, pt
    for key in ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50'):
        assert abs(pt[key] - ort.metrics[key]) <= 0.001, (key, pt, ort.metrics)
