"""Box and mask AP of an exported Mask R-CNN in ONNX Runtime equal the PyTorch reference's.

AP is measured against the reference's own detections and masks (``write_pseudo_ground_truth``):
random weights score about 0 AP on the real annotations, which would make equality vacuous.
"""

import pytest
import torch
from conftest import ROOT, write_pseudo_ground_truth
from test_two_stage import CONFIGS, small_options

from deploy.apis.model import init_detector
from deploy.apis.test import run_test
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.export.onnx_export import export_onnx
from deploy.models.checkpoint import save_checkpoint
from deploy.models.random_weights import make_detections_likely

MASK_RCNN = str(ROOT / CONFIGS['mask_rcnn_r50_fpn_1x_coco'])


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A 6-image val set, a small 6-class Mask R-CNN checkpoint and its ONNX export."""
    root = tmp_path_factory.mktemp('two_stage_eval')
    paths = generate_synthetic_coco(root / 'data', num_train=0, num_val=6, seed=5)
    options = small_options('mask_rcnn_r50_fpn_1x_coco', roi_mode='nonzero')
    options.update(
        {
            'model.roi_head.bbox_head.num_classes': len(CATEGORIES),
            'model.roi_head.mask_head.num_classes': len(CATEGORIES),
            'data.test.ann_file': str(paths['val']),
            'data.test.img_prefix': str(root / 'data' / 'val2017'),
            'data.test.pipeline.1.img_scale': (512, 320),
        }
    )
    torch.manual_seed(2)
    model, _ = init_detector(MASK_RCNN, cfg_options=options)
    make_detections_likely(model)
    ckpt = root / 'small.pth'
    save_checkpoint(model, ckpt, meta={'CLASSES': tuple(c['name'] for c in CATEGORIES)})
    onnx_file = root / 'small.onnx'
    img = torch.randn(2, 3, 320, 448)
    export_onnx(
        model,
        img,
        torch.tensor([[320.0, 448.0], [300.0, 400.0]]),
        onnx_file,
        exporter='torchscript',
        dynamic=True,
    )
    return dict(ckpt=ckpt, onnx=onnx_file, options=options, root=root, val=paths['val'])


def test_onnxruntime_box_and_mask_ap_equal_pytorch(workspace):
    # The same batch size for both: batching pads images to a common size, which changes what
    # the backbone sees near the borders (for any backend).
    kwargs = dict(
        cfg_options=workspace['options'],
        metrics=('bbox', 'segm', 'proposal'),
        batch_size=2,
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    first = run_test(MASK_RCNN, workspace['ckpt'], 'pytorch', **kwargs)
    pseudo = write_pseudo_ground_truth(first, workspace['val'], workspace['root'] / 'pseudo.json')
    kwargs['cfg_options'] = dict(workspace['options'], **{'data.test.ann_file': str(pseudo)})
    pt = run_test(MASK_RCNN, workspace['ckpt'], 'pytorch', **kwargs)
    ort = run_test(MASK_RCNN, workspace['onnx'], 'onnxruntime', **kwargs)
    assert sum(len(r) for r in pt.results) > 0, 'the reference must detect something'
    assert all(isinstance(r.masks, list) for r in ort.results), 'masks stream as RLE'
    assert pt.metrics['bbox_mAP'] > 0.2 and pt.metrics['segm_mAP'] > 0.2, pt.metrics
    for key in ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50', 'AR@100'):
        assert abs(pt.metrics[key] - ort.metrics[key]) <= 0.001, (key, pt.metrics, ort.metrics)
