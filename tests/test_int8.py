"""INT8 quantisation (``tools/quantize.py``, :mod:`deploy.onnx_graph.int8`) on the bundled models:
it runs, records itself, keeps post-processing float, matches FP32 within a stated bound, finds
sensitive layers, and runs in the test and benchmark tools."""

import helpers.bundled_exports as bundled
import helpers.catalogue as catalogue
import numpy as np
import onnx
import pytest
from conftest import ROOT

from deploy.apis.contract import plan_run
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.config import load_config
from deploy.datasets.pipeline import collate, network_inputs
from deploy.evaluation.parity import match_result_lists, parity_ap
from deploy.onnx_graph.mixed_precision import COMPUTE_OPS, POSTPROCESS_OPS
from deploy.postprocess import outputs_to_results
from deploy.spec import read_onnx_spec

#: INT8 against FP32 on the val images (measured on the bundled RetinaNet: 93-96% matched,
#: parity AP 0.83-0.92; box AP 68.5 -> 68.3 on the whole val set)
MIN_MATCHED, MIN_PARITY_AP = 0.85, 0.75


def _descendants(graph, seeds) -> set[str]:
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    seen, stack = set(), [n for n in graph.node if n.op_type in seeds]
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        for out in node.output:
            stack.extend(consumers.get(out, ()))
    return seen


def _val_results(reference, candidate, count: int) -> tuple[list, list]:
    """Both RetinaNet backends' results on the first ``count`` val images."""
    from deploy.datasets.coco import CocoDetectionDataset

    data = bundled.data_options()
    cfg = load_config(bundled.CONFIGS['retinanet'], data)
    plan = plan_run(candidate, cfg, 'candidate', logger=lambda *a: None)
    dataset = CocoDetectionDataset(
        data['data.test.ann_file'], data['data.test.img_prefix'], plan.pipeline()
    )
    refs, tests = [], []
    for index in range(count):
        img, metas = collate([dataset[index]])
        inputs = network_inputs(img, metas)
        refs.append(outputs_to_results(reference(inputs), metas)[0])
        tests.append(outputs_to_results(candidate(inputs), metas)[0])
    return refs, tests


def test_quantisation_runs_and_records_itself():
    result = bundled.int8_export('retinanet')
    spec = read_onnx_spec(result.output_file)
    assert spec.precision == 'int8'
    record = spec.extra['int8']
    assert record['method'] == 'minmax' and record['per_channel']
    assert record['calibration']['images'] == 8
    assert record['calibration']['source'].endswith('instances_train2017.json')
    assert record['calibration']['parity_ap'] >= 0.7
    fp32 = onnx.load(str(bundled.fp32_export('retinanet')))
    convs = sum(n.op_type == 'Conv' for n in fp32.graph.node)
    assert record['quantized_layers'] == convs and record['float_layers'] == []
    graph = onnx.load(str(result.output_file)).graph
    assert sum(n.op_type == 'QuantizeLinear' for n in graph.node) >= convs


@pytest.mark.parametrize('model', ['retinanet', 'mask_rcnn'])
def test_postprocessing_nodes_stay_float(model):
    """Nothing after TopK / NMS / RoiAlign is rounded, except the inputs of the RoI heads' own
    convolutions and FCs; decoding, TopK and NMS read float32."""
    graph = onnx.load(str(bundled.int8_export(model).output_file)).graph
    post = _descendants(graph, POSTPROCESS_OPS)
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for q in (n for n in graph.node if n.op_type == 'QuantizeLinear' and n.name in post):
        readers = [r for dq in consumers[q.output[0]] for r in consumers.get(dq.output[0], ())]
        assert readers and all(r.op_type in COMPUTE_OPS for r in readers), q.name
    producer = {out: n for n in graph.node for out in n.output}
    for node in graph.node:
        if node.op_type in ('TopK', 'NonMaxSuppression', 'Exp', 'Sigmoid', 'Softmax'):
            for name in node.input[:1]:
                source = producer.get(name)
                assert source is None or source.op_type != 'QuantizeLinear', node.name
    # The RoI heads' last layers (class scores, box deltas, mask logits) are not rounded.
    heads = [n for n in graph.node if n.op_type in COMPUTE_OPS and n.name in post]
    last = [
        n for n in heads if not any(c.op_type == 'QuantizeLinear' for c in consumers[n.output[0]])
    ]
    assert (model == 'retinanet') == (not heads)
    assert model == 'retinanet' or last
    for value in (*graph.input, *graph.output):
        assert value.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64)


def test_int8_matches_fp32_by_iou():
    """The stated bound: on 20 val images INT8 detections match FP32's (label, IoU >= 0.5) for
    >= 85% and score >= 0.75 parity AP; the reference detects something."""
    fp32 = OnnxRuntimeBackend(bundled.fp32_export('retinanet'))
    int8 = OnnxRuntimeBackend(bundled.int8_export('retinanet').output_file)
    refs, tests = _val_results(fp32, int8, 20)
    stats = match_result_lists(refs, tests)
    assert stats.num_ref > 100
    assert stats.matched_fraction >= MIN_MATCHED, stats
    assert parity_ap(refs, tests) >= MIN_PARITY_AP


def test_sensitivity_search_keeps_the_worst_layer_float(tmp_path):
    """An unreachable gate makes the tool rank the layers and keep the worst in float."""
    from deploy.apis.quantize import quantize_model

    out = tmp_path / 'strict.int8.onnx'
    result = quantize_model(
        bundled.CONFIGS['retinanet'],
        bundled.fp32_export('retinanet'),
        out,
        calib_images=4,
        check_images=2,
        min_parity_ap=0.999,
        max_float_layers=1,
        cfg_options=bundled.data_options(),
        logger=lambda *a: None,
    )
    assert [a['float_layers'] for a in result.attempts] == [0, 1]
    record = read_onnx_spec(out).extra['int8']
    assert record['calibration']['attempts'] == result.attempts
    graph = onnx.load(str(out)).graph
    initializers = {i.name for i in graph.initializer}
    if result.float_layers:  # kept only where it raised the parity
        [name] = result.float_layers
        [node] = [n for n in graph.node if n.name == name]
        assert node.input[1] in initializers, 'float weights, no DequantizeLinear'


def test_int8_file_in_test_and_benchmark_tools():
    from deploy.apis.test import run_test
    from deploy.benchmark import format_markdown, run_benchmark

    int8 = bundled.int8_export('retinanet').output_file
    run = run_test(
        bundled.CONFIGS['retinanet'],
        int8,
        'onnxruntime',
        cfg_options=bundled.data_options(),
        num_images=10,
        metrics=('bbox',),
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    assert run.metrics['bbox_mAP'] > 0.5
    report = run_benchmark(
        bundled.CONFIGS['retinanet'],
        [bundled.fp32_export('retinanet'), int8],
        ['onnxruntime'],
        image=bundled.IMAGE,
        warmup=0,
        iters=2,
        threads=2,
        profile_iters=1,
        peak_size=256,
        count_flops=False,
        logger=lambda *a: None,
    )
    assert list(report['backends']) == ['onnxruntime', 'onnxruntime int8']
    fp32, q = report['backends'].values()
    assert q['precision'] == 'int8' and q['rounds'] == 1
    assert len(q['latency_ms']) == 4 and fp32['ratio'] == {'infer': 1.0, 'total': 1.0}
    assert 'QLinearConv' in q['ort_profile']['by_op_ms']
    assert report['peak_int8']['gops'] > 0
    table = format_markdown(report)
    assert 'INT8 peak' in table and 'QLinearConv' in table


def test_merging_rounds_pools_the_samples():
    from deploy.benchmark.runner import add_ratios, merge_rounds

    def result(samples):
        return dict(
            samples_s={s: list(samples) for s in ('pre', 'infer', 'post', 'total')},
            input_shape=[1, 3, 8, 8],
            cpu_per_wall=1.0,
            memory_mb=dict(peak_rss=10.0, rss_after_load=5.0),
        )

    merged = merge_rounds([result([0.1, 0.1]), result([0.3])])
    assert merged['rounds'] == 2 and 'samples_s' not in merged
    assert np.isclose(merged['latency_ms']['total']['mean'], 1000 * 0.5 / 3)
    other = merge_rounds([result([0.05])])
    results = {'a': merged, 'b': other}
    add_ratios(results)
    assert np.isclose(results['b']['ratio']['infer'], 50 / (1000 * 0.5 / 3))


def test_bad_quantisation_inputs_are_one_line(tmp_path):
    int8 = bundled.int8_export('retinanet').output_file
    fp32 = bundled.fp32_export('retinanet')
    cfg = bundled.CONFIGS['retinanet']
    opts = ['--cfg-options', *(f'{k}={v}' for k, v in bundled.data_options().items())]
    cases = [
        ((cfg, int8, '--output-file', tmp_path / 'a.onnx'), ('int8', 'FP32 export')),
        ((cfg, fp32, '--output-file', fp32), ('must differ',)),
        ((cfg, fp32, '--output-file', tmp_path / 'b.onnx', '--method', 'kl'), ('--method',)),
        ((cfg, fp32, '--output-file', tmp_path / 'c.onnx', '--verify'), ('--checkpoint',)),
        (
            (cfg, fp32, '--output-file', tmp_path / 'd.onnx', '--calib-images', '500', *opts),
            ('500', 'images'),
        ),
    ]
    for args, needles in cases:
        outcome = catalogue.call('quantize.py', *args, cwd=tmp_path)
        catalogue.assert_one_line_error(outcome, *needles)
    assert not list(tmp_path.glob('*.onnx'))


def test_weight_type_is_chosen_for_the_cpu(monkeypatch):
    """``auto`` is uint8 only where ONNX Runtime's int8 kernels saturate (x86 without VNNI)."""
    import deploy.cpu
    from deploy.onnx_graph.int8 import QuantizeSettings, resolve_weights

    monkeypatch.setattr(deploy.cpu, 'saturating_int8_gemm', lambda: True)
    assert resolve_weights('auto')[0] == 'uint8'
    assert resolve_weights('int8') == ('int8', 'asked for')
    monkeypatch.setattr(deploy.cpu, 'saturating_int8_gemm', lambda: False)
    assert resolve_weights('auto')[0] == 'int8'
    with pytest.raises(ValueError, match='weights'):
        QuantizeSettings(weights='int4')


def test_cpu_without_vnni_saturates(monkeypatch):
    import deploy.cpu

    monkeypatch.setattr(deploy.cpu.platform, 'machine', lambda: 'x86_64')
    for flags, saturating in (({'avx2'}, True), ({'avx2', 'avx512_vnni'}, False), (set(), False)):
        monkeypatch.setattr(deploy.cpu, '_cpuinfo_flags', lambda f=flags: frozenset(f))
        assert deploy.cpu.saturating_int8_gemm() is saturating, flags
    monkeypatch.setattr(deploy.cpu.platform, 'machine', lambda: 'aarch64')
    monkeypatch.setattr(deploy.cpu, '_cpuinfo_flags', lambda: frozenset({'asimd'}))
    assert deploy.cpu.saturating_int8_gemm() is False


def test_uint8_weights_run_in_onnxruntime_and_are_refused_by_openvino(tmp_path):
    """``--weights uint8``: uint8 weight initialisers, integer kernels in ONNX Runtime with the
    same detections as the int8-weight file (by IoU), and a one-line refusal from OpenVINO,
    which would run the file in FP32."""
    from deploy.apis.quantize import quantize_model
    from deploy.backends.openvino import OpenVINOBackend
    from deploy.errors import BackendUnavailable

    out = tmp_path / 'u8.int8.onnx'
    quantize_model(
        bundled.CONFIGS['retinanet'],
        bundled.fp32_export('retinanet'),
        out,
        calib_images=4,
        check_images=0,
        weights='uint8',
        cfg_options=bundled.data_options(),
        logger=lambda *a: None,
    )
    record = read_onnx_spec(out).extra['int8']
    assert record['weights'] == 'uint8' and record['weights_reason'] == 'asked for'
    graph = onnx.load(str(out)).graph
    weights = {i.name: i.data_type for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    conv_weights = [
        producer[n.input[1]].input[0]
        for n in graph.node
        if n.op_type == 'Conv' and n.input[1] in producer
    ]
    assert conv_weights and all(weights[w] == onnx.TensorProto.UINT8 for w in conv_weights)

    s8 = OnnxRuntimeBackend(bundled.int8_export('retinanet').output_file)
    refs, tests = _val_results(s8, OnnxRuntimeBackend(out), 6)
    stats = match_result_lists(refs, tests)
    assert stats.num_ref > 20
    assert stats.matched_fraction >= MIN_MATCHED, stats
    with pytest.raises(BackendUnavailable, match='uint8.*FP32.*--weights int8'):
        OpenVINOBackend(out)
    # --verify-backends openvino: reported as skipped, not as a pass or a crash
    from deploy.apis.quantize import verify_quantized

    lines = []
    tables = verify_quantized(
        bundled.CONFIGS['retinanet'],
        bundled.CHECKPOINTS['retinanet'],
        out,
        input_img=ROOT / 'demo' / 'demo.jpg',
        backends=('openvino',),
        cfg_options=bundled.data_options(),
        logger=lines.append,
    )
    assert tables == {} and any('openvino int8: skipped' in line for line in lines), lines


def test_regression_entries_share_one_int8_file_where_auto_means_int8(monkeypatch):
    import deploy.cpu
    from deploy.apis.regression import _resolved_quantize_options as resolved

    auto, int8 = {'calib_images': 32}, {'calib_images': 32, 'weights': 'int8'}
    monkeypatch.setattr(deploy.cpu, 'saturating_int8_gemm', lambda: False)
    assert resolved(auto) == resolved(int8) == dict(int8)
    monkeypatch.setattr(deploy.cpu, 'saturating_int8_gemm', lambda: True)
    assert resolved(auto)['weights'] == 'uint8' and resolved(int8)['weights'] == 'int8'
