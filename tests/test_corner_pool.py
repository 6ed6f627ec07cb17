"""Corner pooling: the eager op is MMCV's (``torch.cummax``) and a brute-force directional max;
the graph (a MaxPool and a Loop of doubling steps, both exporters) equals it bit for bit on every
direction and on axis lengths from 1 to beyond the MaxPool's window (where the Loop runs)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deploy.export import onnx_ops
from deploy.ops.corner_pool import MODES, WINDOW, corner_pool


def brute_corner_pool(x: np.ndarray, mode: str) -> np.ndarray:
    """Every output pixel is the max over itself and all pixels in ``mode``'s direction."""
    out = np.empty_like(x)
    height, width = x.shape[2:]
    for i in range(height):
        for j in range(width):
            rows = {
                'top': slice(i, height),
                'bottom': slice(0, i + 1),
                'left': slice(i, i + 1),
                'right': slice(i, i + 1),
            }[mode]
            cols = {
                'top': slice(j, j + 1),
                'bottom': slice(j, j + 1),
                'left': slice(j, width),
                'right': slice(0, j + 1),
            }[mode]
            out[:, :, i, j] = x[:, :, rows, cols].max(axis=(2, 3))
    return out


class AllModes(torch.nn.Module):
    def forward(self, x):
        return tuple(corner_pool(x, mode) for mode in MODES)


@pytest.mark.parametrize('mode', list(MODES))
def test_eager_matches_brute_force(mode):
    gen = torch.Generator().manual_seed(0)
    for height, width in ((1, 1), (1, 7), (6, 1), (5, 9)):
        x = torch.randn(2, 3, height, width, generator=gen)
        expected = brute_corner_pool(x.numpy(), mode)
        np.testing.assert_array_equal(corner_pool(x, mode).numpy(), expected)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match='top, bottom, left, right'):
        corner_pool(torch.zeros(1, 1, 2, 2), 'up')


@pytest.fixture(scope='module', params=['dynamo', 'torchscript'])
def session(request, tmp_path_factory):
    """All four modes of one graph with dynamic batch, height and width (3 channels)."""
    path = tmp_path_factory.mktemp('corner_pool') / f'{request.param}.onnx'
    x = torch.randn(2, 3, 9, 13)
    if request.param == 'dynamo':
        dims = {
            axis: torch.export.Dim(name, min=1, max=4096)
            for axis, name in ((0, 'batch'), (2, 'height'), (3, 'width'))
        }
        program = torch.onnx.export(
            AllModes().eval(),
            (x,),
            None,
            dynamo=True,
            external_data=False,
            opset_version=18,
            input_names=['x'],
            output_names=list(MODES),
            dynamic_shapes={'x': dims},
            custom_translation_table=onnx_ops.onnx_translation_table(),
        )
        program.save(str(path), external_data=False)
    else:
        onnx_ops.register_legacy_symbolics(18)
        torch.onnx.export(
            AllModes().eval(),
            (x,),
            str(path),
            dynamo=False,
            opset_version=18,
            input_names=['x'],
            output_names=list(MODES),
            dynamic_axes={'x': {0: 'batch', 2: 'height', 3: 'width'}},
        )
    model = onnx_ops.inline_local_functions(onnx.load(str(path)))
    return model, ort.InferenceSession(model.SerializeToString())


def test_graph_uses_standard_ops_only(session):
    model, _ = session
    assert {o.domain for o in model.opset_import} <= {'', 'ai.onnx'}
    assert not model.functions
    assert {'MaxPool', 'Loop'} <= {n.op_type for n in model.graph.node}


@pytest.mark.parametrize(
    'shape',
    [(1, 3, 1, 1), (1, 3, 2, 3), (3, 3, 17, 1), (1, 3, 1, 40)]
    + [(1, 3, WINDOW - 1, 3), (1, 3, 3, WINDOW), (2, 3, WINDOW + 1, 2), (1, 3, 2, 4 * WINDOW + 5)],
)
def test_graph_equals_cummax(session, shape):
    """Sizes 1..n: single pixels, short axes, the MaxPool's full window, and longer axes that
    need one and three doubling steps of the Loop."""
    _, sess = session
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    outputs = sess.run(None, {'x': x.numpy()})
    for mode, output in zip(MODES, outputs):
        dim, reverse = MODES[mode]
        if reverse:
            expected = torch.cummax(x.flip(dim), dim).values.flip(dim)
        else:
            expected = torch.cummax(x, dim).values
        np.testing.assert_array_equal(output, expected.numpy(), err_msg=mode)
