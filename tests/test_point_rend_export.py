"""PointRend's box and mask AP in ONNX Runtime against PyTorch's, on the exports of the default
rows of ``test_export_parity.py`` (which compares them with eager, detection by detection, and
checks their graphs).

AP is measured against the reference's own detections and masks (``write_pseudo_ground_truth``):
random weights score about 0 AP on the real annotations, which would make equality vacuous.
"""

import json

import pytest
from conftest import write_pseudo_ground_truth
from helpers.export_parity import Row, exported
from helpers.small_point_rend import CONFIG, build_small, small_options

from deploy.apis.test import run_test
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.evaluation.coco_metric import evaluate_coco
from deploy.models.checkpoint import save_checkpoint

#: (exporter, RoI mode): the default rows of test_export_parity.py, whose exports these reuse
EXPORTS = [('torchscript', 'nonzero'), ('dynamo', 'masked')]


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


@pytest.mark.parametrize('exporter,roi_mode', EXPORTS)
def test_onnxruntime_ap_equals_pytorch(reference_run, exporter, roi_mode):
    """Box and mask AP within 0.001 (same batch size: batching pads images to a common size,
    which changes what the backbone sees near the borders, for any backend)."""
    pt = reference_run['metrics']
    _, path = exported(Row('point_rend', exporter, roi_mode))
    ort = run_test(str(CONFIG), path, 'onnxruntime', **reference_run['kwargs'])
    assert sum(len(r) for r in reference_run['results']) > 0, 'the reference must detect something'
    assert all(isinstance(r.masks, list) for r in ort.results), 'masks stream as RLE'
    assert pt['bbox_mAP'] > 0.2 and pt['segm_mAP'] > 0.2, pt
    for key in ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50'):
        assert abs(pt[key] - ort.metrics[key]) <= 0.001, (key, pt, ort.metrics)
