"""Box AP of exported FCOS, FSAF, SSD and YOLOv3 in ONNX Runtime equals the PyTorch reference's
on a small generated COCO set (``tools/test.py``'s job, in process).

Random weights score about 0 AP on the real annotations, so AP is measured against the
reference's own detections (``write_pseudo_ground_truth``): PyTorch scores high there, and every
detection ONNX Runtime gets wrong costs it AP.
"""

import pytest
import torch
from conftest import write_pseudo_ground_truth
from helpers.small_single_stage import MODELS, build_small, config_path, small_options

from deploy.apis.test import run_test
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.export.onnx_export import export_onnx
from deploy.models.checkpoint import save_checkpoint

#: small test scales (the configs' own are 1333x800 and 608); SSD keeps its fixed 300x300
TEST_SCALES = {'fcos': (320, 256), 'fsaf': (320, 256), 'yolo': (320, 320)}


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('single_stage_eval')
    paths = generate_synthetic_coco(root / 'data', num_train=0, num_val=4, seed=7)
    return paths


@pytest.mark.parametrize('name', MODELS)
def test_onnxruntime_box_ap_equals_pytorch(name, val_set, tmp_path):
    options = dict(
        small_options(name, num_classes=len(CATEGORIES)),
        **{
            'data.test.ann_file': str(val_set['val']),
            'data.test.img_prefix': str(val_set['val_img_prefix']),
        },
    )
    if name in TEST_SCALES:
        options['data.test.pipeline.1.img_scale'] = TEST_SCALES[name]
    model = build_small(name, **{k: v for k, v in options.items() if k.startswith('data.')})
    ckpt = save_checkpoint(
        model, tmp_path / 'small.pth', meta={'CLASSES': tuple(c['name'] for c in CATEGORIES)}
    )
    onnx_file = tmp_path / 'small.onnx'
    size = (300, 300) if name == 'ssd' else (256, 320)
    export_onnx(
        model,
        torch.randn(2, 3, *size),
        torch.tensor([size, size], dtype=torch.float32),
        onnx_file,
        exporter='torchscript',
        dynamic=True,
    )
    # The same batch size for both: batching pads images to a common size.
    kwargs = dict(
        cfg_options=options,
        metrics=('bbox',),
        batch_size=2,
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    config = config_path(name)
    first = run_test(config, ckpt, 'pytorch', **kwargs)
    pseudo = write_pseudo_ground_truth(first, val_set['val'], tmp_path / 'pseudo.json')
    kwargs['cfg_options'] = dict(options, **{'data.test.ann_file': str(pseudo)})
    pt = run_test(config, ckpt, 'pytorch', **kwargs)
    ort = run_test(config, onnx_file, 'onnxruntime', **kwargs)
    assert sum(len(r) for r in pt.results) > 0, 'the reference must detect something'
    assert pt.metrics['bbox_mAP'] > 0.2, pt.metrics  # degenerate boxes stay FPs
    for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75'):
        assert abs(pt.metrics[key] - ort.metrics[key]) <= 0.001, (key, pt.metrics, ort.metrics)
