"""The exporter a model takes without ``--exporter``: TorchScript where its measured export time
calls for it (same detections, a fraction of dynamo's time), dynamo elsewhere."""

import pytest

from deploy.export.options import DEFAULT_EXPORTER
from deploy.models.detectors.dino import DINO
from deploy.models.detectors.rtmdet import RTMDet
from deploy.models.detectors.single_stage import FCOS, YOLOX, RetinaNet
from deploy.models.detectors.two_stage import FasterRCNN, MaskRCNN


@pytest.mark.parametrize('model', [RetinaNet, FasterRCNN, DINO, RTMDet, YOLOX])
def test_measured_families_export_with_torchscript(model):
    assert model.default_exporter == 'torchscript'


@pytest.mark.parametrize('model', [FCOS, MaskRCNN])
def test_other_models_keep_the_project_default(model):
    assert getattr(model, 'default_exporter', DEFAULT_EXPORTER) == DEFAULT_EXPORTER == 'dynamo'
