"""tools/benchmark.py on a tiny random-weight RetinaNet: the report's schema, the Markdown table,
the PNG plot, FLOP counting against hand-computed layers, and the ONNX Runtime post-processing
attribution. No timing assertions: speed targets live in the benchmark, never in tests."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import RETINANET_CFG, ROOT, SMALL_RETINANET
from onnx import TensorProto, helper
from torch import nn

from deploy.benchmark import (
    attribute_profile,
    classify_nodes,
    count_detector_flops,
    count_macs,
    measure_peak_flops,
    summarize,
)
from deploy.benchmark.runner import check_batch, pair_models, resolve_shape
from deploy.errors import ConfigError
from deploy.export.onnx_export import export_onnx
from deploy.models.checkpoint import save_checkpoint

SHAPE = (128, 160)
CFG_OPTIONS = [f'{k}={v}'.replace(' ', '') for k, v in SMALL_RETINANET.items()]


@pytest.fixture(scope='module')
def models(small_retinanet, tmp_path_factory):
    """The small RetinaNet as a checkpoint and as a static 128x160 ONNX file."""
    model, _ = small_retinanet
    root = tmp_path_factory.mktemp('bench')
    ckpt = save_checkpoint(model, root / 'small.pth')
    onnx_file = root / 'small.onnx'
    img = torch.randn(1, 3, *SHAPE)
    export_onnx(
        model, img, torch.tensor([SHAPE], dtype=torch.float32), onnx_file, exporter='torchscript'
    )
    return dict(root=root, ckpt=ckpt, onnx=onnx_file)


def run_tool(*args, cwd):
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'benchmark.py'), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_benchmark_report_schema_table_and_plot(models):
    root = models['root']
    out_json, out_png = root / 'bench.json', root / 'bench.png'
    code, stdout, stderr = run_tool(
        RETINANET_CFG,
        models['onnx'],
        models['ckpt'],
        '--backend',
        'onnxruntime',
        'pytorch',
        '--shape',
        *SHAPE,
        '--batch-size',
        1,
        '--warmup',
        1,
        '--iters',
        2,
        '--threads',
        1,
        '--peak-size',
        256,
        '--profile-iters',
        2,
        '--json',
        out_json,
        '--plot',
        out_png,
        '--cfg-options',
        *CFG_OPTIONS,
        cwd=root,
    )
    assert code == 0, stdout + stderr
    report = json.loads(out_json.read_text())
    assert report['schema_version'] == 1 and report['kind'] == 'inference'
    assert report['shape'] == list(SHAPE) and report['threads'] == 1
    assert set(report['backends']) == {'onnxruntime', 'pytorch'}
    assert report['flops']['flops'] == 2 * report['flops']['macs'] > 0
    assert report['peak']['gflops'] > 0 and report['peak']['threads'] == 1
    for name, result in report['backends'].items():
        for stage in ('pre', 'infer', 'post', 'total'):
            stats = result['latency_ms'][stage]
            assert {'mean', 'median', 'p90'} <= set(stats), (name, stage)
            assert stats['min'] <= stats['median'] <= stats['max']
        assert result['throughput_ips']['total'] > 0
        assert result['memory_mb']['peak_rss'] > 0
        assert result['flops'] == report['flops']['flops']
        assert result['peak_fraction'] > 0
        assert result['threads']['torch_intra_op'] == 1
        assert result['input_shape'] == [1, 3, *SHAPE]
    ort = report['backends']['onnxruntime']
    assert ort['threads']['ort_intra_op'] == 1
    profile = ort['ort_profile']
    assert 0 < profile['postprocess_ms'] < profile['run_ms']
    assert 0 < profile['postprocess_share'] < 1
    assert {'TopK', 'NonMaxSuppression'} <= set(profile['postprocess_by_op_ms'])
    assert report['backends']['pytorch']['ort_profile'] is None

    table = [line for line in stdout.splitlines() if line.startswith('|')]
    assert table[0].startswith('| backend | pre ms | infer ms | post ms | total ms')
    assert len(table) == 4 and table[2].startswith('| onnxruntime |')
    assert out_png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_export_timing_mode(models):
    root = models['root']
    out_json = root / 'export.json'
    code, stdout, stderr = run_tool(
        '--export-time',
        RETINANET_CFG,
        models['ckpt'],
        '--exporters',
        'torchscript',
        '--shape',
        *SHAPE,
        '--threads',
        1,
        '--json',
        out_json,
        '--cfg-options',
        *CFG_OPTIONS,
        cwd=root,
    )
    assert code == 0, stdout + stderr
    report = json.loads(out_json.read_text())
    assert report['kind'] == 'export' and list(report['exports']) == ['torchscript']
    result = report['exports']['torchscript']
    assert result['wall_s'] > 0 and result['num_nodes'] > 0 and result['file_mb'] > 0
    assert result['memory_mb']['peak_rss'] >= result['memory_mb']['rss_before_export'] > 0
    assert '| torchscript |' in stdout


def test_conv_flops_by_hand():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    count = count_macs(conv, lambda: conv(torch.zeros(1, 3, 32, 32)))
    # output 8 x 16 x 16, each a 3 x 3 x 3 dot product
    assert count.macs == 8 * 16 * 16 * 3 * 3 * 3 == 55296
    assert count.flops == 2 * 55296 and count.by_type == {'Conv2d': 55296}


def test_grouped_linear_matmul_and_functional_flops():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            y = self.dw(x)  # 2 x 4 x 4 x 4 outputs, 1 x 3 x 3 each
            z = self.fc(y.flatten(2))  # 2 x 4 x 5 outputs, 16 each
            w = z @ torch.ones(5, 6)  # 2 x 4 x 6 outputs, 5 each
            return nn.functional.conv2d(x, torch.ones(2, 4, 1, 1)), w  # 2 x 2 x 4 x 4, 4 each

    net = Net()
    count = count_macs(net, lambda: net(torch.ones(2, 4, 4, 4)), batch_size=2)
    assert count.by_type == {
        'Conv2d': 2 * 4 * 16 * 9,
        'Linear': 2 * 4 * 5 * 16,
        'matmul': 2 * 4 * 6 * 5,
        'functional_conv': 2 * 2 * 16 * 4,
    }
    assert count.to_dict()['gflops_per_image'] == pytest.approx(count.flops / 2e9)


def test_detector_flops_match_torch_flop_counter(small_retinanet):
    """Every conv of the detector is hooked: the count equals torch's own dispatch-level
    counter (which also counts 2 FLOPs per MAC) on the same deploy path."""
    from torch.utils.flop_counter import FlopCounterMode

    model, _ = small_retinanet
    img, img_shape = torch.zeros(1, 3, *SHAPE), torch.tensor([SHAPE], dtype=torch.float32)
    ours = count_detector_flops(model, img, img_shape)
    with torch.no_grad(), FlopCounterMode(display=False) as reference:
        model.forward_deploy(img, img_shape)
    assert ours.flops == reference.get_total_flops()


def _graph(nodes, inputs, outputs):
    def info(name):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)

    return helper.make_graph(nodes, 'g', [info(i) for i in inputs], [info(o) for o in outputs])


def test_attribution_rule_on_a_hand_built_graph():
    """Backbone conv -> head conv -> decode/TopK/NMS; a RoI head whose RoIs come from the NMS."""
    node = helper.make_node
    graph = _graph(
        [
            node('Conv', ['x', 'w0'], ['f'], name='backbone'),
            node('Relu', ['f'], ['r'], name='relu'),
            node('Conv', ['r', 'w1'], ['cls'], name='head'),
            node('Sigmoid', ['cls'], ['s'], name='sigmoid'),
            node('TopK', ['s', 'k'], ['v', 'i'], name='topk'),
            node('NonMaxSuppression', ['v', 's'], ['keep'], name='nms'),
            node('Gather', ['v', 'keep'], ['rois'], name='gather'),
            node('RoiAlign', ['r', 'rois', 'bi'], ['roifeat'], name='roi_align'),
            node('Gemm', ['roifeat', 'w2'], ['fc'], name='fc'),
            node('Softmax', ['fc'], ['scores'], name='softmax'),
        ],
        ['x', 'w0', 'w1', 'w2', 'k', 'bi'],
        ['scores'],
    )
    classes = classify_nodes(graph)
    network = {'backbone', 'relu', 'head', 'roi_align', 'fc'}
    assert {n for n, c in classes.items() if c == 'network'} == network
    assert {n for n, c in classes.items() if c == 'postprocess'} == {
        'sigmoid',
        'topk',
        'nms',
        'gather',
        'softmax',
    }

    def event(name, ts, dur, cat='Node'):
        return dict(cat=cat, name=name, ts=ts, dur=dur, args=dict(op_name=name))

    events = [
        event('model_run', 0, 100, cat='Session'),  # warm-up run: ignored
        event('head_kernel_time', 10, 50),
        event('model_run', 200, 100, cat='Session'),
        event('head_kernel_time', 210, 60),
        event('nms_kernel_time', 280, 15),
        event('mystery_kernel_time', 296, 2),
    ]
    shares = attribute_profile(events, classes, warmup=1)
    assert shares['runs'] == 1
    assert shares['network_ms'] == pytest.approx(0.060)
    assert shares['postprocess_ms'] == pytest.approx(0.015)
    assert shares['unattributed_ms'] == pytest.approx(0.002)
    assert shares['overhead_ms'] == pytest.approx(0.023)
    assert shares['postprocess_share'] == pytest.approx(0.15)


def test_summary_statistics():
    stats = summarize([0.001 * v for v in range(1, 11)])  # 1..10 ms
    assert stats['mean'] == pytest.approx(5.5) and stats['median'] == pytest.approx(5.5)
    assert stats['p90'] == pytest.approx(9.1) and stats['min'] == pytest.approx(1.0)


def test_peak_measurement_reports_its_method():
    peak = measure_peak_flops(num_threads=1, n=64, repeats=2, warmup=1)
    assert peak['gflops'] > 0 and peak['threads'] == 1
    assert 'torch.matmul' in peak['method'] and '64x64' in peak['method']
    assert measure_peak_flops(1, n=64, repeats=1, library='numpy')['library'] == 'numpy'


def test_model_pairing_and_shape_checks(models, small_retinanet):
    _, cfg = small_retinanet
    onnx_file, ckpt = str(models['onnx']), str(models['ckpt'])
    assert pair_models([onnx_file, ckpt], None) == [('onnxruntime', onnx_file), ('pytorch', ckpt)]
    with pytest.raises(ConfigError, match='give one --backend per model'):
        pair_models([onnx_file, ckpt], ['onnxruntime', 'pytorch', 'pytorch'])
    pairs = [('onnxruntime', onnx_file)]
    assert resolve_shape(cfg, pairs, None) == SHAPE  # the static model's shape
    with pytest.raises(ConfigError, match='static at 128x160'):
        resolve_shape(cfg, pairs, [256, 320])
    assert resolve_shape(cfg, [], None) == (800, 1344)  # the config's 1333x800, padded to 32
    with pytest.raises(ConfigError, match='static batch of 1'):
        check_batch(pairs, 2)
