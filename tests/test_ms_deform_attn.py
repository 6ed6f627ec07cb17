"""Multi-scale deformable attention against a per-point loop written from MMCV's definition, and
its ONNX export (GridSample only, no custom op) in ONNX Runtime."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import torch

from deploy.backends.tensorrt.compat import check_tensorrt_compat
from deploy.ops.ms_deform_attn import multi_scale_deformable_attention

BATCH, QUERIES, HEADS, DIMS, POINTS = 2, 7, 3, 4, 5
LEVEL_SHAPES = [(9, 13), (5, 7), (3, 4)]


def _bilinear_zero_padded(value: np.ndarray, u: float, v: float) -> np.ndarray:
    """``value [D, H, W]`` at normalised ``(u, v)``: pixel ``(u W - 0.5, v H - 0.5)``, each of
    the four neighbours weighted by its distance and counted only inside the map."""
    _, height, width = value.shape
    x, y = u * width - 0.5, v * height - 0.5
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(value.shape[0])
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            if 0 <= yi < height and 0 <= xi < width:
                out += (1 - abs(x - xi)) * (1 - abs(y - yi)) * value[:, yi, xi]
    return out


def _loop_reference(values, locations, weights) -> np.ndarray:
    """Every (batch, query, head, level, point) on its own, in float64 -> ``[B, Q, M * D]``."""
    out = np.zeros((BATCH, QUERIES, HEADS, DIMS))
    for b in range(BATCH):
        for q in range(QUERIES):
            for m in range(HEADS):
                for level, value in enumerate(values):
                    head_map = value[b * HEADS + m]
                    for p in range(POINTS):
                        u, v = locations[b, q, m, level, p]
                        sample = _bilinear_zero_padded(head_map, u, v)
                        out[b, q, m] += weights[b, q, m, level, p] * sample
    return out.reshape(BATCH, QUERIES, HEADS * DIMS)


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    values = [torch.randn(BATCH * HEADS, DIMS, h, w, generator=gen) for h, w in LEVEL_SHAPES]
    shape = (BATCH, QUERIES, HEADS, len(LEVEL_SHAPES), POINTS)
    # locations in [-0.15, 1.15]: the borders and beyond them (the zero padding) are exercised
    locations = torch.rand(*shape, 2, generator=gen) * 1.3 - 0.15
    weights = torch.rand(*shape[:3], len(LEVEL_SHAPES) * POINTS, generator=gen).softmax(-1)
    return values, locations, weights.view(shape)


def test_matches_per_point_loop():
    values, locations, weights = _inputs()
    # exact cell centres, borders and outside points too
    locations[0, 0, 0, 0, :3] = torch.tensor([[0.5 / 13, 0.5 / 9], [0.0, 0.0], [1.0, 1.0]])
    locations[0, 0, 0, 0, 3] = torch.tensor([1.2, 0.5])  # wholly outside: contributes 0
    ours = multi_scale_deformable_attention(values, locations, weights)
    ref = _loop_reference(
        [v.double().numpy() for v in values], locations.double().numpy(), weights.double().numpy()
    )
    assert ours.shape == (BATCH, QUERIES, HEADS * DIMS)
    assert np.abs(ref).max() > 0.1, 'the reference samples something'
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-5)


class _Wrapper(torch.nn.Module):
    def forward(self, v0, v1, v2, locations, weights):
        return multi_scale_deformable_attention([v0, v1, v2], locations, weights)


def test_onnx_export_is_grid_sample_and_matches(tmp_path):
    values, locations, weights = _inputs(seed=1)
    path = tmp_path / 'msda.onnx'
    names = ['v0', 'v1', 'v2', 'locations', 'weights']
    torch.onnx.export(
        _Wrapper(),
        (*values, locations, weights),
        str(path),
        input_names=names,
        output_names=['out'],
        opset_version=17,
        dynamo=False,
        dynamic_axes={
            'v0': {2: 'h0', 3: 'w0'},
            'v1': {2: 'h1', 3: 'w1'},
            'v2': {2: 'h2', 3: 'w2'},
            'locations': {1: 'queries'},
            'weights': {1: 'queries'},
        },
    )
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert 'GridSample' in ops
    assert {n.domain for n in model.graph.node} <= {'', 'ai.onnx'}, 'standard ops only'
    assert check_tensorrt_compat(model) == []
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    values, locations, weights = _inputs(seed=2)  # other shapes than the traced ones
    locations, weights = locations[:, :4], weights[:, :4]
    feeds = dict(zip(names, (t.numpy() for t in (*values, locations, weights))))
    out = session.run(None, feeds)[0]
    ref = multi_scale_deformable_attention(values, locations, weights).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
