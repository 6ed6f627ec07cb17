"""RoIAlign against a brute-force reference, and its ONNX translation in both exporters."""

import math

import numpy as np
import onnx
import pytest
import torch

from deploy.errors import ExportError
from deploy.ops.roi_align import check_opset, roi_align


def _bilinear(feat: np.ndarray, y: float, x: float) -> np.ndarray:
    """MMCV's bilinear_interpolate, one sample, written out literally."""
    height, width = feat.shape[1:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feat.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * feat[:, y_low, x_low]
        + hy * lx * feat[:, y_low, x_high]
        + ly * hx * feat[:, y_high, x_low]
        + ly * lx * feat[:, y_high, x_high]
    )


def roi_align_reference(features, rois, out_size, scale, ratio, aligned) -> np.ndarray:
    """Loops over RoIs, bins and samples in float64 (MMCV's roi_align_forward, avg mode)."""
    features = features.double().numpy()
    out = np.zeros((len(rois), features.shape[1], out_size, out_size))
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.double().tolist()):
        sx, sy = x1 * scale - offset, y1 * scale - offset
        rw, rh = x2 * scale - offset - sx, y2 * scale - offset - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / out_size, rh / out_size
        gw = ratio if ratio > 0 else math.ceil(rw / out_size)
        gh = ratio if ratio > 0 else math.ceil(rh / out_size)
        count = max(gw * gh, 1)
        for ph in range(out_size):
            for pw in range(out_size):
                acc = np.zeros(features.shape[1])
                for iy in range(gh):
                    y = sy + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sx + pw * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(features[int(b)], y, x)
                out[k, :, ph, pw] = acc / count
    return out


def _rois(height: int, width: int, stride: float, seed: int = 0) -> torch.Tensor:
    """Large, small, sub-pixel, degenerate and out-of-image RoIs over two images."""
    gen = torch.Generator().manual_seed(seed)
    img_h, img_w = height * stride, width * stride
    xy = torch.rand(12, 2, generator=gen) * torch.tensor([img_w, img_h])
    wh = torch.rand(12, 2, generator=gen) * torch.tensor([img_w, img_h]) * 0.6
    random = torch.cat([xy, xy + wh], 1)
    special = torch.tensor(
        [
            [1.3, 2.2, 1.9, 2.6],  # sub-pixel
            [5.0, 5.0, 5.0, 5.0],  # empty
            [-20.0, -15.0, 10.0, 12.0],  # over the top-left corner
            [img_w - 6.0, img_h - 9.0, img_w + 30, img_h + 25],  # past the bottom-right corner
            [img_w + 10.0, 3.0, img_w + 40.0, 20.0],  # fully outside
            [0.0, 0.0, img_w, img_h],  # the whole image
        ]
    )
    boxes = torch.cat([random, special])
    batch = (torch.arange(len(boxes)) % 2).float()[:, None]
    return torch.cat([batch, boxes], 1)


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('ratio', [0, 2])
def test_eager_matches_brute_force(aligned, ratio):
    torch.manual_seed(0)
    features = torch.randn(2, 3, 9, 11)
    rois = _rois(9, 11, stride=4.0)
    out = roi_align(features, rois, 4, 0.25, ratio, aligned)
    ref = roi_align_reference(features, rois, 4, 0.25, ratio, aligned)
    assert out.shape == (len(rois), 3, 4, 4)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_rectangular_output_and_empty_input():
    features = torch.randn(1, 2, 6, 6)
    assert roi_align(features, torch.zeros(0, 5), (3, 2), 1.0).shape == (0, 2, 3, 2)
    rois = torch.tensor([[0.0, 0.5, 0.5, 4.0, 5.0]])
    full = roi_align(features, rois, 3, 1.0, 2, True)
    rect = roi_align(features, rois, (3, 3), 1.0, 2, True)
    assert torch.equal(full, rect)


class _RoiAlignModule(torch.nn.Module):
    def __init__(self, ratio, aligned):
        super().__init__()
        self.ratio, self.aligned = ratio, aligned

    def forward(self, features, rois):
        return roi_align(features, rois, (5, 4), 0.5, self.ratio, self.aligned)


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
@pytest.mark.parametrize('aligned,ratio', [(True, 0), (False, 0), (True, 2), (False, 3)])
def test_onnx_roialign_matches_eager(tmp_path, exporter, aligned, ratio):
    import onnxruntime as ort

    torch.manual_seed(1)
    features = torch.randn(2, 3, 10, 12)
    rois = _rois(10, 12, stride=2.0, seed=2)
    path = tmp_path / 'roi_align.onnx'
    module = _RoiAlignModule(ratio, aligned).eval()
    kwargs = dict(input_names=['features', 'rois'], output_names=['out'], opset_version=16)
    if exporter == 'dynamo':
        rois_dim = torch.export.Dim('num_rois', min=2, max=4096)
        torch.onnx.export(
            module,
            (features, rois),
            str(path),
            dynamo=True,
            external_data=False,
            dynamic_shapes={
                'features': {
                    0: torch.export.Dim('b', min=1, max=8),
                    2: torch.export.Dim('h', min=2, max=99),
                    3: torch.export.Dim('w', min=2, max=99),
                },
                'rois': {0: rois_dim},
            },
            **kwargs,
        )
    else:
        torch.onnx.export(
            module,
            (features, rois),
            str(path),
            dynamo=False,
            dynamic_axes={'features': {0: 'b', 2: 'h', 3: 'w'}, 'rois': {0: 'num_rois'}},
            **kwargs,
        )
    graph = onnx.load(str(path))
    roi_nodes = [n for n in graph.graph.node if n.op_type == 'RoiAlign']
    assert len(roi_nodes) == 1 and {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'}
    mode = next(
        a.s.decode() for a in roi_nodes[0].attribute if a.name == 'coordinate_transformation_mode'
    )
    assert mode == ('half_pixel' if aligned else 'output_half_pixel')
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for feats, boxes in ((features, rois), (torch.randn(1, 3, 7, 9), _rois(7, 9, 2.0, 3)[::2])):
        boxes = boxes.clone()
        boxes[:, 0] = boxes[:, 0].clamp(max=feats.shape[0] - 1)
        (actual,) = session.run(None, {'features': feats.numpy(), 'rois': boxes.numpy()})
        expected = module(feats, boxes).numpy()
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_low_opset_is_refused(tmp_path):
    with pytest.raises(ExportError, match='opset >= 16'):
        check_opset(11)
    with pytest.raises(Exception, match='opset >= 16'):
        torch.onnx.export(
            _RoiAlignModule(0, True),
            (torch.randn(2, 3, 8, 8), _rois(8, 8, 2.0)),
            str(tmp_path / 'low.onnx'),
            dynamo=False,
            opset_version=13,
        )
