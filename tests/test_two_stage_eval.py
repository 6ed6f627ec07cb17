"""Box AP, proposal AR and mask AP of the exported two-stage models in ONNX Runtime equal the
PyTorch reference's.

AP is measured against the reference's own detections and masks (``write_pseudo_ground_truth``):
random weights score about 0 AP on the real annotations, which would make equality vacuous.
"""

import pytest
import torch
from conftest import ROOT, write_pseudo_ground_truth
from helpers.small_two_stage import CONFIGS, small_options

from deploy.apis.model import init_detector
from deploy.apis.test import run_test
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.export.onnx_export import export_onnx
from deploy.models.checkpoint import save_checkpoint
from deploy.models.random_weights import make_detections_likely

#: each model with one of the RoI modes (both modes are covered across the four)
ROI_MODES = {
    'faster_rcnn_r50_fpn_1x_coco': 'masked',
    'mask_rcnn_r50_fpn_1x_coco': 'nonzero',
    'cascade_rcnn_r50_fpn_1x_coco': 'nonzero',
    'cascade_mask_rcnn_r50_fpn_1x_coco': 'masked',
}


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('two_stage_eval')
    return root, generate_synthetic_coco(root / 'data', num_train=0, num_val=6, seed=5)


@pytest.fixture(params=sorted(ROI_MODES))
def workspace(request, val_set, tmp_path):
    """A small 6-class model of each family, its checkpoint and its ONNX export."""
    stem = request.param
    data_root, paths = val_set
    options = small_options(stem, roi_mode=ROI_MODES[stem])
    heads = (
        [f'model.roi_head.bbox_head.{i}' for i in range(3)]
        if stem.startswith('cascade')
        else ['model.roi_head.bbox_head']
    )
    if 'mask' in stem:
        heads.append('model.roi_head.mask_head')
    options.update({f'{head}.num_classes': len(CATEGORIES) for head in heads})
    options.update(
        {
            'data.test.ann_file': str(paths['val']),
            'data.test.img_prefix': str(data_root / 'data' / 'val2017'),
            'data.test.pipeline.1.img_scale': (512, 320),
        }
    )
    config = str(ROOT / CONFIGS[stem])
    torch.manual_seed(2)
    model, _ = init_detector(config, cfg_options=options, logger=None)
    make_detections_likely(model)
    ckpt = tmp_path / 'small.pth'
    save_checkpoint(model, ckpt, meta={'CLASSES': tuple(c['name'] for c in CATEGORIES)})
    onnx_file = tmp_path / 'small.onnx'
    export_onnx(
        model,
        torch.randn(2, 3, 320, 448),
        torch.tensor([[320.0, 448.0], [300.0, 400.0]]),
        onnx_file,
        exporter='torchscript',
        dynamic=True,
    )
    return dict(
        config=config,
        masks='mask' in stem,
        ckpt=ckpt,
        onnx=onnx_file,
        options=options,
        root=tmp_path,
        val=paths['val'],
    )


def test_onnxruntime_ap_equals_pytorch(workspace):
    """Box AP, proposal AR and (mask models) mask AP, within 0.1 AP points."""
    # The same batch size for both: batching pads images to a common size, which changes what
    # the backbone sees near the borders (for any backend).
    metrics = ('bbox', 'segm', 'proposal') if workspace['masks'] else ('bbox', 'proposal')
    kwargs = dict(
        cfg_options=workspace['options'],
        metrics=metrics,
        batch_size=2,
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    config = workspace['config']
    first = run_test(config, workspace['ckpt'], 'pytorch', **kwargs)
    pseudo = write_pseudo_ground_truth(first, workspace['val'], workspace['root'] / 'pseudo.json')
    kwargs['cfg_options'] = dict(workspace['options'], **{'data.test.ann_file': str(pseudo)})
    pt = run_test(config, workspace['ckpt'], 'pytorch', **kwargs)
    ort = run_test(config, workspace['onnx'], 'onnxruntime', **kwargs)
    assert sum(len(r) for r in pt.results) > 0, 'the reference must detect something'
    assert pt.metrics['bbox_mAP'] > 0.2, pt.metrics
    keys = ['bbox_mAP', 'bbox_mAP_50', 'AR@100']
    if workspace['masks']:
        assert all(isinstance(r.masks, list) for r in ort.results), 'masks stream as RLE'
        assert pt.metrics['segm_mAP'] > 0.2, pt.metrics
        keys += ['segm_mAP', 'segm_mAP_50']
    for key in keys:
        assert abs(pt.metrics[key] - ort.metrics[key]) <= 0.001, (key, pt.metrics, ort.metrics)
