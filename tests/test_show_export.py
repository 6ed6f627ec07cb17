"""``--show``: the exporters' messages, never the whole traced graph."""

import pytest
import torch
from conftest import ROOT

from deploy.apis.export import export_model
from deploy.errors import ExportError


class _Stop(Exception):
    pass


@pytest.mark.parametrize('exporter', ['torchscript', 'dynamo'])
def test_show_does_not_ask_the_exporter_for_the_graph(exporter, monkeypatch, tmp_path):
    calls = []

    def recording_export(*args, **kwargs):
        calls.append(kwargs)
        raise _Stop

    monkeypatch.setattr(torch.onnx, 'export', recording_export)
    with pytest.raises(ExportError, match='_Stop'):
        export_model(
            str(ROOT / 'configs/bundled/retinanet_r18_tiny_synthetic.py'),
            str(ROOT / 'checkpoints/retinanet_r18_tiny_synthetic.pth'),
            tmp_path / 'model.onnx',
            exporter=exporter,
            input_img=str(ROOT / 'demo/demo.jpg'),
            show=True,
            logger=lambda *a: None,
        )
    assert calls and calls[0]['verbose'] is False
    assert not list(tmp_path.iterdir()), 'nothing is left behind'
