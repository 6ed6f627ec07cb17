"""Exports of the bundled models shared by the INT8 and OpenVINO tests (made once per run, by
whichever worker needs one first; the others wait for it and reuse it).

The generated data set is written to a temporary folder (16 training images for calibration, the
standard 50-image val set, byte-identical to ``data/synthetic_coco``'s), and the configs are
pointed at it with ``--cfg-options``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path

from conftest import ROOT, made_once, shared_path

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


def workspace() -> Path:
    return shared_path('bundled_exports')


@functools.cache
def data_options() -> dict:
    """``--cfg-options`` pointing the bundled configs at the generated data set."""
    from deploy.datasets.synthetic import generate_synthetic_coco

    record = workspace() / 'data.json'
    with made_once(record):
        if not record.is_file():
            paths = generate_synthetic_coco(workspace() / 'data', num_train=16, num_val=50)
            record.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    paths = json.loads(record.read_text())
    return {
        'data.test.ann_file': paths['val'],
        'data.test.img_prefix': paths['val_img_prefix'],
        'data.train.ann_file': paths['train'],
        'data.train.img_prefix': paths['train_img_prefix'],
    }


@functools.cache
def fp32_export(model: str) -> Path:
    """The dynamic FP32 export (TorchScript exporter: the faster one) of a bundled model."""
    from deploy.apis.export import export_model

    out = workspace() / f'{model}.onnx'
    with made_once(out):
        if not out.is_file():
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
    """``tools/quantize.py`` on :func:`fp32_export`: 8 calibration images, 4 check images, int8
    weights (the file both engines run in INT8 on every CPU; ``auto`` would pick uint8 on a CPU
    without VNNI, which OpenVINO refuses)."""
    from deploy.apis.quantize import QuantizeResult, quantize_model

    record = workspace() / f'{model}.int8.json'  # the result, for the workers that reuse it
    with made_once(record):
        if not record.is_file():
            result = quantize_model(
                CONFIGS[model],
                fp32_export(model),
                workspace() / f'{model}.int8.onnx',
                calib_images=8,
                check_images=4,
                weights='int8',
                cfg_options=data_options(),
                **QUIET,
            )
            record.write_text(json.dumps(asdict(result), default=str))
    fields = json.loads(record.read_text())
    return QuantizeResult(**dict(fields, output_file=Path(fields['output_file'])))
