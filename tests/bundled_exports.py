"""Exports of the bundled models shared by the INT8 and OpenVINO tests (made once per session).

The generated data set is written to a temporary folder (16 training images for calibration, the
standard 50-image val set, byte-identical to ``data/synthetic_coco``'s), and the configs are
pointed at it with ``--cfg-options``.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from conftest import ROOT

CONFIGS = {
    'retinanet': str(ROOT / 'configs' / 'bundled' / 'retinanet_r18_tiny_synthetic.py'),
    'mask_rcnn': str(ROOT / 'configs' / 'bundled' / 'mask_rcnn_r18_tiny_synthetic.py'),
}
CHECKPOINTS = {
    'retinanet': str(ROOT / 'checkpoints' / 'retinanet_r18_tiny_synthetic.pth'),
    'mask_rcnn': str(ROOT / 'checkpoints' / 'mask_rcnn_r18_tiny_synthetic.pth'),
}
IMAGE = str(ROOT / 'demo' / 'demo.jpg')
QUIET = dict(logger=lambda *a: None)


@functools.cache
def workspace() -> Path:
    return Path(tempfile.mkdtemp(prefix='bundled_exports_'))


@functools.cache
def data_options() -> dict:
    """``--cfg-options`` pointing the bundled configs at the generated data set."""
    from deploy.datasets.synthetic import generate_synthetic_coco

    paths = generate_synthetic_coco(workspace() / 'data', num_train=16, num_val=50)
    return {
        'data.test.ann_file': str(paths['val']),
        'data.test.img_prefix': str(paths['val_img_prefix']),
        'data.train.ann_file': str(paths['train']),
        'data.train.img_prefix': str(paths['train_img_prefix']),
    }


@functools.cache
def fp32_export(model: str) -> Path:
    """The dynamic FP32 export (TorchScript exporter: the faster one) of a bundled model."""
    from deploy.apis.export import export_model

    out = workspace() / f'{model}.onnx'
    export_model(
        CONFIGS[model],
        CHECKPOINTS[model],
        out,
        input_img=IMAGE,
        dynamic=True,
        exporter='torchscript',
        **QUIET,
    )
    return out


@functools.cache
def int8_export(model: str):
    """``tools/quantize.py`` on :func:`fp32_export`: 8 calibration images, 4 check images."""
    from deploy.apis.quantize import quantize_model

    return quantize_model(
        CONFIGS[model],
        fp32_export(model),
        workspace() / f'{model}.int8.onnx',
        calib_images=8,
        check_images=4,
        cfg_options=data_options(),
        **QUIET,
    )
