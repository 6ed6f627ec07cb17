"""RTMDet and RTMDet-Ins tiny at 320x320 on a small generated val set, exported once per module:
what tests/test_rtmdet.py and tests/test_rtmdet_ins.py share."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import ROOT

from deploy.apis.model import init_detector
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.export.onnx_export import export_onnx
from deploy.models.random_weights import make_detections_likely

#: the default tests run at 320x320 (the configs' 640 gives the same graph, 4x the work)
SMALL_INPUT = {
    'test_dataloader.dataset.pipeline.1.scale': (320, 320),
    'test_dataloader.dataset.pipeline.2.size': (320, 320),
}


def small_val_set(folder: Path) -> dict:
    return generate_synthetic_coco(folder, num_train=0, num_val=4, seed=7)


def small_options(val_set: dict) -> dict:
    """320x320 input, the generated set's six classes, its val split as the test set."""
    return dict(
        SMALL_INPUT,
        **{
            'model.bbox_head.num_classes': len(CATEGORIES),
            'test_dataloader.dataset.ann_file': str(val_set['val']),
            'test_dataloader.dataset.data_prefix.img': str(val_set['val_img_prefix']),
        },
    )


def build_tiny(config: str, options: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model, _ = init_detector(str(ROOT / config), cfg_options=options, logger=None)
    return make_detections_likely(model)


def export_tiny(model: torch.nn.Module, path: Path) -> Path:
    """A dynamic TorchScript export traced on a batch of two 320x320 images."""
    img = torch.randn(2, 3, 320, 320)
    shape = torch.tensor([[320.0, 320.0]] * 2)
    export_onnx(model, img, shape, path, exporter='torchscript', dynamic=True)
    return path
