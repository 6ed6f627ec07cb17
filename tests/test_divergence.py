"""The divergence finder (tools/analysis/divergence.py) names a planted fault, maps ONNX nodes back
to module names, and compares an INT8 file's dequantised tensors."""

import json

import helpers.bundled_exports as bundled
import numpy as np
import onnx
import pytest
from conftest import call_tool
from onnx import helper, numpy_helper

from deploy.evaluation.divergence import TensorStats, module_name

PLANTED = 'backbone.layer2.0.conv2'


def test_module_names_from_both_exporters():
    torchscript = helper.make_node('Relu', ['x'], ['y'], name='/backbone/layer1/layer1.0/relu/Relu')
    assert module_name(torchscript) == 'backbone.layer1.0.relu'
    dynamo = helper.make_node('Conv', ['x', 'w'], ['y'], name='node_conv2d_3')
    entry = dynamo.metadata_props.add()
    entry.key, entry.value = (
        'pkg.torch.onnx.name_scopes',
        "['', 'neck', 'neck.fpn_convs.0', 'conv']",
    )
    assert module_name(dynamo) == 'neck.fpn_convs.0.conv'


def test_stats_of_identical_and_scaled_tensors():
    ref = np.arange(1, 7, dtype=np.float32)
    same, half = TensorStats(), TensorStats()
    same.add(ref, ref.copy())
    half.add(ref, ref * 0.5)
    assert same.rel_error == 0 and same.sqnr_db == 120.0
    assert abs(half.rel_error - 0.5) < 1e-9 and abs(half.cosine - 1) < 1e-9
    assert abs(half.sqnr_db - 20 * np.log10(2)) < 1e-6


def _plant_fault(src, dst) -> None:
    """Perturb the weights of one convolution (found by its node's module name)."""
    model = onnx.load(str(src))
    [conv] = [n for n in model.graph.node if n.op_type == 'Conv' and module_name(n) == PLANTED]
    [weight] = [t for t in model.graph.initializer if t.name == conv.input[1]]
    values = numpy_helper.to_array(weight)
    noise = np.random.default_rng(0).normal(0, values.std(), values.shape).astype(values.dtype)
    weight.CopyFrom(numpy_helper.from_array(values + noise, weight.name))
    onnx.save(model, str(dst))


def _divergence(tmp_path, reference, candidate, *extra):
    out = call_tool(
        'divergence.py', bundled.CONFIGS['retinanet'], reference, candidate,
        '--num-images', '1', '--chunk', '64', '--json', tmp_path / 'div.json', *extra,
        '--cfg-options', *(f'{k}={v}' for k, v in bundled.data_options().items()), cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stderr
    return json.loads((tmp_path / 'div.json').read_text()), out


def test_names_the_planted_layer(tmp_path):
    fp32 = bundled.fp32_export('retinanet')
    _plant_fault(fp32, tmp_path / 'faulty.onnx')
    report, out = _divergence(
        tmp_path, fp32, tmp_path / 'faulty.onnx', '--plot', tmp_path / 'd.png'
    )
    assert report['top'][0]['module'] == PLANTED, report['top'][:3]
    # everything before the planted layer is exact
    first = next(x['depth'] for x in report['layers'] if x['module'] == PLANTED)
    assert all(x['sqnr_db'] == 120.0 for x in report['layers'][:first])
    assert f'| {PLANTED} | Conv |' in out.stdout
    assert (tmp_path / 'd.png').stat().st_size > 0


@pytest.mark.slow
def test_int8_compares_dequantised_tensors(tmp_path):
    fp32, int8 = bundled.fp32_export('retinanet'), bundled.int8_export('retinanet').output_file
    report, _ = _divergence(tmp_path, fp32, int8)
    backbone = [x for x in report['layers'] if x['module'].startswith('backbone')]
    assert len(backbone) > 10
    # quantisation error, not a wrong pairing: close but not exact
    assert all(15 < x['sqnr_db'] < 60 and x['cosine'] > 0.98 for x in backbone), backbone[:3]


@pytest.mark.slow
def test_one_file_on_two_engines(tmp_path):
    """ONNX Runtime against OpenVINO on the same FP32 file: tensors map one to one, and the two
    FP32 engines agree closely through the backbone."""
    fp32 = bundled.fp32_export('retinanet')
    report, _ = _divergence(tmp_path, fp32, fp32, '--engines', 'onnxruntime', 'openvino')
    backbone = [x for x in report['layers'] if x['module'].startswith('backbone')]
    assert len(backbone) > 10
    assert all(x['sqnr_db'] > 60 and x['cosine'] > 0.9999 for x in backbone), backbone[:3]


def test_an_engine_that_ends_its_process_costs_only_that_tensor():
    from helpers.crashing_reader import read_or_crash

    from deploy.evaluation.divergence import read_isolated

    graph = helper.make_graph(
        [helper.make_node('Relu', ['x'], [name]) for name in ('a', 'boom', 'ccc')],
        'g',
        [helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info('a', onnx.TensorProto.FLOAT, [3])],
    )
    out = read_isolated(
        'openvino', helper.make_model(graph), ['a', 'boom', 'ccc'], [{}], None, read_or_crash
    )
    assert out['boom'] == 'openvino ended its process reading this tensor'
    assert [t.tolist() for t in out['a']] == [[1.0] * 3]
    assert [t.tolist() for t in out['ccc']] == [[3.0] * 3]
