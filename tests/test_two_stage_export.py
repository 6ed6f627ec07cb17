"""Two-stage export refusals. (Each two-stage model exported with both exporters and both RoI
modes, against eager in ONNX Runtime: rows of ``test_export_parity.py``.)"""

import pytest
import torch
from conftest import random_batch
from helpers.small_two_stage import build_small

from deploy.errors import ExportError
from deploy.export.onnx_export import export_onnx


def test_low_opset_is_refused(tmp_path):
    model, _ = build_small('faster_rcnn_r50_fpn_1x_coco')
    img, metas = random_batch([(256, 320)])
    with pytest.raises(ExportError, match='opset 15 is too low'):
        export_onnx(
            model,
            img,
            torch.tensor([[256.0, 320.0]]),
            tmp_path / 'm.onnx',
            opset_version=15,
            exporter='torchscript',
        )
