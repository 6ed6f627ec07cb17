"""TensorRT backend pieces that run without TensorRT: profiles, sidecar, precision plans (with a
fake ``tensorrt`` module), the FP16 ONNX conversion, shape checks and the tools' error lines.
The engine build/run test needs tensorrt and a GPU and skips otherwise."""

import importlib.util
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT
from onnx import TensorProto, helper, numpy_helper

from deploy.backends.tensorrt import engine as trt_engine
from deploy.backends.tensorrt.compat import check_tensorrt_compat
from deploy.backends.tensorrt.precision import (
    apply_builder_flags,
    convert_to_mixed_fp16,
    network_creation_flags,
    pin_postprocess_to_fp32,
    plan_precision,
)
from deploy.backends.tensorrt.profiles import (
    ShapeRange,
    check_input_shapes,
    resolve_profiles,
    shape_from_cli,
)
from deploy.backends.tensorrt.runtime import TensorRTBackend
from deploy.errors import BackendError, ConfigError
from deploy.spec import InputSpec, ModelSpec, PreprocessConfig

HAVE_TRT = importlib.util.find_spec('tensorrt') is not None
HAVE_GPU = HAVE_TRT and torch.cuda.is_available()
RETINA = ROOT / 'configs' / 'retinanet' / 'retinanet_r50_fpn_1x_coco.py'
SPEC = ModelSpec(
    'RetinaNet',
    class_names=('cat', 'dog'),
    preprocess=PreprocessConfig(scale=(1333, 800), keep_ratio=True, size_divisor=32),
    inputs=InputSpec(dynamic=True, dynamic_size=True, size_divisor=32),
    opset=18,
)


def _io_model(dims_by_name):
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in dims_by_name.items()
    ]
    outputs = [
        helper.make_tensor_value_info(f'{n}_out', TensorProto.FLOAT, None) for n in dims_by_name
    ]
    nodes = [helper.make_node('Identity', [n], [f'{n}_out']) for n in dims_by_name]
    return helper.make_model(helper.make_graph(nodes, 'io', inputs, outputs))


DYNAMIC = _io_model({'input': ['batch', 3, 'height', 'width'], 'img_shape': ['batch', 2]})


# --------------------------------------------------------------------------------------------
# optimisation profiles
# --------------------------------------------------------------------------------------------
def test_default_profile_from_metadata():
    profiles = resolve_profiles(DYNAMIC, SPEC)
    assert profiles['input'] == ShapeRange((1, 3, 32, 32), (1, 3, 800, 1344), (2, 3, 1344, 1344))
    assert profiles['img_shape'] == ShapeRange((1, 2), (1, 2), (2, 2))
    assert resolve_profiles(DYNAMIC, SPEC, max_batch=4)['img_shape'].max == (4, 2)


def test_profile_from_backend_config_and_cli():
    backend_config = dict(
        input_shapes=dict(
            input=dict(
                min_shape=[1, 3, 320, 320],
                opt_shape=[1, 3, 800, 1344],
                max_shape=[4, 3, 1344, 1344],
            )
        )
    )
    profiles = resolve_profiles(DYNAMIC, SPEC, backend_config)
    assert profiles['input'].min == (1, 3, 320, 320) and profiles['input'].max[0] == 4
    assert profiles['img_shape'] == ShapeRange((1, 2), (1, 2), (4, 2))  # tied to the batch
    # Command-line shapes win over the config, key by key; opt is clamped into the new range.
    cli = {'input': dict(max_shape=shape_from_cli([640, 640]))}
    profiles = resolve_profiles(DYNAMIC, SPEC, backend_config, cli)
    assert profiles['input'] == ShapeRange((1, 3, 320, 320), (1, 3, 640, 640), (1, 3, 640, 640))
    assert profiles['img_shape'].max == (1, 2)


def test_profile_static_graph_and_errors():
    static = _io_model({'input': [1, 3, 800, 1344], 'img_shape': [1, 2]})
    profiles = resolve_profiles(static, SPEC.replace(inputs=InputSpec(static_shape=(800, 1344))))
    assert profiles['input'] == ShapeRange(*[(1, 3, 800, 1344)] * 3)
    with pytest.raises(ConfigError, match='axis 2 is fixed to 800'):
        shapes = dict(input_shapes=dict(input=dict(min_shape=[1, 3, 32, 32])))
        resolve_profiles(static, None, shapes)
    with pytest.raises(ConfigError, match='min <= opt <= max'):
        resolve_profiles(
            DYNAMIC,
            SPEC,
            dict(
                input_shapes=dict(
                    input=dict(min_shape=[1, 3, 900, 900], opt_shape=[1, 3, 800, 800])
                )
            ),
        )
    with pytest.raises(ConfigError, match="'image'"):
        resolve_profiles(DYNAMIC, SPEC, dict(input_shapes=dict(image=dict())))
    with pytest.raises(ConfigError, match='H W or B 3 H W'):
        shape_from_cli([1, 3, 4])


def test_shape_outside_profile_is_a_clear_error():
    profiles = resolve_profiles(DYNAMIC, SPEC)
    ok = dict(input=np.zeros((1, 3, 800, 1216), np.float32), img_shape=np.zeros((1, 2), np.float32))
    check_input_shapes(ok, profiles)
    too_big = dict(ok, input=np.zeros((1, 3, 1400, 1216), np.float32))
    with pytest.raises(
        BackendError,
        match=r"input 'input' has shape \[1, 3, 1400, 1216\], "
        r'outside the engine profile \(min \[1, 3, 32, 32\], max '
        r'\[2, 3, 1344, 1344\]\)',
    ):
        check_input_shapes(too_big, profiles)
    # The backend checks before touching the GPU.
    backend = TensorRTBackend.__new__(TensorRTBackend)
    backend.profiles = profiles
    batch3 = dict(input=np.zeros((3, 3, 64, 64), np.float32), img_shape=np.zeros((3, 2)))
    with pytest.raises(BackendError, match="input 'input' has shape \\[3, 3, 64, 64\\]"):
        backend(batch3)


# --------------------------------------------------------------------------------------------
# engine sidecar and cache key
# --------------------------------------------------------------------------------------------
def _sidecar(tmp_path, **changes):
    profiles = resolve_profiles(DYNAMIC, SPEC)
    onnx_path = tmp_path / 'm.onnx'
    onnx_path.write_bytes(b'not really onnx')
    args = dict(
        trt_version='10.9.0.34',
        gpu=dict(name='NVIDIA H100', compute_capability='9.0'),
        profiles=profiles,
        precision='fp16',
        precision_mode='BuilderFlag.FP16',
        onnx_path=onnx_path,
        onnx_sha256=trt_engine.file_sha256(onnx_path),
        spec=SPEC,
        workspace_size=1 << 30,
        cache_key='k',
    )
    args.update(changes)
    return trt_engine.build_sidecar(**args)


def test_sidecar_roundtrip_and_checks(tmp_path):
    sidecar = _sidecar(tmp_path)
    engine_path = tmp_path / 'm.engine'
    assert trt_engine.write_sidecar(engine_path, sidecar).name == 'm.engine.json'
    loaded = trt_engine.read_sidecar(engine_path)
    assert loaded['tensorrt_version'] == '10.9.0.34' and loaded['precision'] == 'fp16'
    spec = trt_engine.sidecar_spec(loaded)
    assert spec.opset == 18 and spec.class_names == ('cat', 'dog') and spec.precision == 'fp16'
    assert loaded['profiles'][0]['input']['max'] == [2, 3, 1344, 1344]
    assert loaded['source_onnx']['sha256'] == trt_engine.file_sha256(tmp_path / 'm.onnx')
    gpu = dict(name='NVIDIA H100', compute_capability='9.0')
    assert trt_engine.check_sidecar(loaded, '10.9.0.34', gpu) == []
    with pytest.raises(BackendError, match='built with TensorRT 10.9.0.34, this is TensorRT 11'):
        trt_engine.check_sidecar(loaded, '11.0.0.1', gpu)
    with pytest.raises(BackendError, match='compute capability 8.0'):
        trt_engine.check_sidecar(loaded, '10.9.0.34', dict(name='A100', compute_capability='8.0'))
    [warning] = trt_engine.check_sidecar(
        loaded, '10.9.0.34', dict(name='NVIDIA H100 NVL', compute_capability='9.0')
    )
    assert 'H100 NVL' in warning
    assert trt_engine.read_sidecar(tmp_path / 'other.engine') is None
    (tmp_path / 'bad.engine.json').write_text('{"format": "x"}')
    with pytest.raises(BackendError, match='not an engine description'):
        trt_engine.read_sidecar(tmp_path / 'bad.engine')


def test_engine_cache_key_tracks_what_the_engine_depends_on(tmp_path):
    profiles = resolve_profiles(DYNAMIC, SPEC)
    key = trt_engine.engine_cache_key('abc', profiles, 'fp32', '10.9', '9.0')
    assert key == trt_engine.engine_cache_key('abc', dict(profiles), 'fp32', '10.9', '9.0')
    others = [
        trt_engine.engine_cache_key('abd', profiles, 'fp32', '10.9', '9.0'),
        trt_engine.engine_cache_key('abc', profiles, 'fp16', '10.9', '9.0'),
        trt_engine.engine_cache_key('abc', profiles, 'fp32', '11.0', '9.0'),
        trt_engine.engine_cache_key(
            'abc', resolve_profiles(DYNAMIC, SPEC, max_batch=4), 'fp32', '10.9', '9.0'
        ),
    ]
    assert key not in others and len(set(others)) == 4
    path = trt_engine.cached_engine_path(tmp_path / 'model.onnx', key)
    assert path.parent == tmp_path and path.name == f'model.{key}.engine'


# --------------------------------------------------------------------------------------------
# precision on TensorRT 10 vs 11, with a fake tensorrt module
# --------------------------------------------------------------------------------------------
def fake_tensorrt(version: str, weak_typing: bool = True):
    flags = dict(TF32='TF32', DIRECT_IO='DIRECT_IO')
    if weak_typing:
        flags.update(FP16='FP16', OBEY_PRECISION_CONSTRAINTS='OBEY_PRECISION_CONSTRAINTS')
    return SimpleNamespace(
        __version__=version,
        BuilderFlag=SimpleNamespace(**flags),
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1),
        float32='float32',
        float16='float16',
        int32='int32',
        LayerType=SimpleNamespace(
            CONVOLUTION='conv',
            DECONVOLUTION='deconv',
            MATRIX_MULTIPLY='mm',
            TOPK='topk',
            NMS='nms',
            SHAPE='shape',
            CONSTANT='const',
            ACTIVATION='act',
            ELEMENTWISE='ew',
            PLUGIN_V2='plugin',
            PLUGIN_V3='plugin3',
        ),
    )


class _Config:
    def __init__(self):
        self.flags = []

    def set_flag(self, flag):
        self.flags.append(flag)


def test_precision_tensorrt10_uses_builder_flag():
    trt = fake_tensorrt('10.9.0.34')
    plan = plan_precision(trt, 'fp16')
    assert not plan.strongly_typed and not plan.convert_onnx_to_fp16 and plan.pin_postprocess_fp32
    config = _Config()
    apply_builder_flags(trt, config, plan)
    assert config.flags == ['FP16', 'OBEY_PRECISION_CONSTRAINTS']
    assert network_creation_flags(trt, plan) == 0
    fp32 = plan_precision(trt, 'fp32')
    assert fp32.builder_flags == [] and not fp32.convert_onnx_to_fp16


@pytest.mark.parametrize('weak_typing', [False, True])
def test_precision_tensorrt11_is_strongly_typed(weak_typing):
    # TensorRT 11 removed BuilderFlag.FP16; a version string of 11 decides even if it lingered.
    trt = fake_tensorrt('11.0.0.7', weak_typing=weak_typing)
    plan = plan_precision(trt, 'fp16')
    assert plan.strongly_typed and plan.convert_onnx_to_fp16 and plan.builder_flags == []
    config = _Config()
    apply_builder_flags(trt, config, plan)
    assert config.flags == []
    assert network_creation_flags(trt, plan) == 1 << 1
    assert not plan_precision(trt, 'fp32').convert_onnx_to_fp16
    with pytest.raises(BackendError, match='unknown precision'):
        plan_precision(trt, 'int8')
    with pytest.raises(BackendError, match='too old'):
        plan_precision(fake_tensorrt('8.6.1'), 'fp32')


class _Tensor:
    def __init__(self, name, dtype='float32'):
        self.name, self.dtype = name, dtype


class _Layer:
    def __init__(self, name, kind, inputs, outputs):
        self.name, self.type = name, kind
        self.inputs, self.outputs = inputs, outputs
        self.num_inputs, self.num_outputs = len(inputs), len(outputs)
        self.precision, self.output_types = None, {}

    def get_input(self, i):
        return self.inputs[i]

    def get_output(self, i):
        return self.outputs[i]

    def set_output_type(self, i, dtype):
        self.output_types[i] = dtype


def test_tensorrt10_fp16_pins_postprocessing_layers_to_fp32():
    trt = fake_tensorrt('10.9.0.34')
    t = {n: _Tensor(n) for n in ('x', 'c1', 'r1', 'c2', 's', 'd', 'k', 'n')}
    t['shape'] = _Tensor('shape', 'int32')
    layers = [
        _Layer('conv1', 'conv', [t['x']], [t['c1']]),
        _Layer('relu', 'act', [t['c1']], [t['r1']]),
        _Layer('conv2', 'conv', [t['r1']], [t['c2']]),
        _Layer('sigmoid', 'act', [t['c2']], [t['s']]),
        _Layer('decode', 'ew', [t['c2'], t['s']], [t['d']]),
        _Layer('topk', 'topk', [t['d']], [t['k']]),
        _Layer('nms', 'nms', [t['k'], t['s']], [t['n']]),
        _Layer('shape', 'shape', [t['x']], [t['shape']]),
    ]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    assert pin_postprocess_to_fp32(trt, network) == 4
    pinned = {layer.name for layer in layers if layer.precision == 'float32'}
    assert pinned == {'sigmoid', 'decode', 'topk', 'nms'}
    assert layers[6].output_types == {0: 'float32'}


# --------------------------------------------------------------------------------------------
# FP16 ONNX conversion (TensorRT 11 path), run on CPU
# --------------------------------------------------------------------------------------------
def _detector_like_model():
    """Conv -> Relu -> Conv (feature extractor), then FP32-sensitive post-processing: box decode
    with Exp (overflows in FP16 for large deltas), Sigmoid scores and NonMaxSuppression."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), 'w1')
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (5, 8, 1, 1)).astype(np.float32), 'w2')
    anchors = numpy_helper.from_array(
        (rng.uniform(0, 200, (1, 64, 4)) * [1, 1, 0, 0] + [0, 0, 40, 40]).astype(np.float32),
        'anchors',
    )
    consts = [
        numpy_helper.from_array(np.array([1, 5, 64], np.int64), 'flat'),
        numpy_helper.from_array(np.array([0], np.int64), 'zero'),
        numpy_helper.from_array(np.array([4], np.int64), 'four'),
        numpy_helper.from_array(np.array([5], np.int64), 'five'),
        numpy_helper.from_array(np.array([2], np.int64), 'two'),
        numpy_helper.from_array(np.array([20], np.int64), 'max_out'),
        numpy_helper.from_array(np.array([0.5], np.float32), 'iou'),
        numpy_helper.from_array(np.array([0.3], np.float32), 'thr'),
        numpy_helper.from_array(np.array([16.0], np.float32), 'stride'),
    ]
    nodes = [
        helper.make_node('Conv', ['x', 'w1'], ['c1'], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node('Relu', ['c1'], ['r1']),
        helper.make_node('Conv', ['r1', 'w2'], ['c2']),
        helper.make_node('Reshape', ['c2', 'flat'], ['f']),  # [1, 5, 64]
        helper.make_node('Transpose', ['f'], ['ft'], perm=[0, 2, 1]),  # [1, 64, 5]
        helper.make_node('Slice', ['ft', 'zero', 'four', 'two'], ['deltas']),
        helper.make_node('Slice', ['ft', 'four', 'five', 'two'], ['logits']),
        helper.make_node('Exp', ['deltas'], ['scale']),
        helper.make_node('Mul', ['scale', 'stride'], ['size']),
        helper.make_node('Add', ['anchors', 'size'], ['boxes']),  # [1, 64, 4]
        helper.make_node('Sigmoid', ['logits'], ['s']),
        helper.make_node('Transpose', ['s'], ['scores'], perm=[0, 2, 1]),  # [1, 1, 64]
        helper.make_node(
            'NonMaxSuppression',
            ['boxes', 'scores', 'max_out', 'iou', 'thr'],
            ['selected'],
            name='nms',
        ),
    ]
    graph = helper.make_graph(
        nodes,
        'det',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 16, 16])],
        [
            helper.make_tensor_value_info('boxes', TensorProto.FLOAT, [1, 64, 4]),
            helper.make_tensor_value_info('scores', TensorProto.FLOAT, [1, 1, 64]),
            helper.make_tensor_value_info('selected', TensorProto.INT64, ['m', 3]),
        ],
        initializer=[w1, w2, anchors, *consts],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    model.ir_version = 9
    return model


def test_fp16_conversion_keeps_decode_and_nms_fp32():
    model = _detector_like_model()
    half = convert_to_mixed_fp16(model)
    onnx.checker.check_model(half)
    inferred = onnx.shape_inference.infer_shapes(half).graph
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in list(inferred.value_info) + list(inferred.output)
    }
    inits = {i.name: i.data_type for i in half.graph.initializer}
    convs = [n for n in half.graph.node if n.op_type == 'Conv']
    assert all(inits[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    assert types['r1'] == TensorProto.FLOAT16 and types['c2'] == TensorProto.FLOAT16
    [nms] = [n for n in half.graph.node if n.op_type == 'NonMaxSuppression']
    assert [types.get(i, inits.get(i)) for i in nms.input[:2]] == [TensorProto.FLOAT] * 2
    for name in ('deltas', 'scale', 'size'):  # the decode stays FP32
        assert types[name] == TensorProto.FLOAT, name
    assert inits['anchors'] == TensorProto.FLOAT
    assert check_tensorrt_compat(half) == []
    # ONNX Runtime on CPU: same selection, boxes and scores within FP16 feature noise.
    x = np.random.default_rng(1).normal(size=(1, 3, 16, 16)).astype(np.float32)
    run = [
        ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider']).run(
            None, {'x': x}
        )
        for m in (model, half)
    ]
    (boxes32, scores32, sel32), (boxes16, scores16, sel16) = run
    assert boxes16.dtype == np.float32 and scores16.dtype == np.float32
    np.testing.assert_allclose(boxes16, boxes32, rtol=5e-3, atol=0.05)
    np.testing.assert_allclose(scores16, scores32, atol=5e-3)
    assert len(sel32) > 0 and np.array_equal(sel16, sel32)


def test_fp16_conversion_leaves_a_graph_without_convs_alone():
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [4])
    model = helper.make_model(
        helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', [x], [y])
    )
    half = convert_to_mixed_fp16(model)
    assert [n.op_type for n in half.graph.node] == ['Relu']


# --------------------------------------------------------------------------------------------
# missing TensorRT / GPU: one-line errors
# --------------------------------------------------------------------------------------------
def test_missing_tensorrt_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)  # import fails
    with pytest.raises(BackendError, match='^TensorRT is not installed: pip install tensorrt'):
        TensorRTBackend(tmp_path / 'm.engine')


def test_missing_gpu_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(trt_engine, 'import_tensorrt', lambda: fake_tensorrt('10.9.0.34'))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(
        'deploy.backends.tensorrt.runtime.import_tensorrt', trt_engine.import_tensorrt
    )
    with pytest.raises(BackendError, match='^TensorRT needs a CUDA GPU'):
        TensorRTBackend(tmp_path / 'm.engine', device='cpu')


def _run_tool(tool, *args, cwd):
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / tool), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    return proc.returncode, proc.stderr.strip()


@pytest.mark.skipif(HAVE_GPU, reason='TensorRT and a GPU are present: nothing is missing')
@pytest.mark.parametrize('tool', ['onnx2tensorrt.py', 'test.py'])
def test_tools_fail_cleanly_without_tensorrt_or_gpu(tool, tmp_path):
    onnx_path = tmp_path / 'm.onnx'
    onnx.save(DYNAMIC, str(onnx_path))
    if tool == 'test.py':
        args = (RETINA, onnx_path, '--backend', 'tensorrt', '--eval', 'bbox')
    else:
        args = (RETINA, onnx_path, '--output-file', tmp_path / 'm.engine')
    code, stderr = _run_tool(tool, *args, cwd=tmp_path)
    assert code == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), stderr
    assert 'TensorRT is not installed' in lines[0] or 'CUDA GPU' in lines[0]
    assert not (tmp_path / 'm.engine').exists()


# --------------------------------------------------------------------------------------------
# real engines (GPU + tensorrt only)
# --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAVE_GPU, reason='needs the tensorrt package and a CUDA GPU')
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_engine_matches_onnxruntime(small_retinanet, tmp_path, precision):
    from conftest import random_batch

    from deploy.backends.onnxruntime import OnnxRuntimeBackend
    from deploy.evaluation.parity import match_result_lists
    from deploy.export.onnx_export import export_onnx
    from deploy.postprocess import outputs_to_results

    model, cfg = small_retinanet
    img, metas = random_batch([(160, 224), (128, 192)])
    img_shape = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
    onnx_path = tmp_path / 'r.onnx'
    export_onnx(model, img, img_shape, onnx_path, dynamic=True)
    shapes = dict(
        input=dict(min_shape=[1, 3, 64, 64], opt_shape=[1, 3, 160, 224], max_shape=[2, 3, 256, 256])
    )
    backend = TensorRTBackend(onnx_path, cfg, 'cuda', precision=precision, input_shapes=shapes)
    assert backend.sidecar['precision'] == precision
    assert trt_engine.read_sidecar(backend.model_file)['source_onnx']['sha256']
    inputs = dict(input=img.numpy(), img_shape=img_shape.numpy())
    ref = outputs_to_results(OnnxRuntimeBackend(onnx_path)(inputs), metas)
    test = outputs_to_results(backend(inputs), metas)
    stats = match_result_lists(ref, test)
    assert stats.matched_fraction >= (0.99 if precision == 'fp32' else 0.8), stats
    # Reused, not rebuilt, from the cache next to the ONNX file.
    again = TensorRTBackend(onnx_path, cfg, 'cuda', precision=precision, input_shapes=shapes)
    assert again.model_file == backend.model_file
    with pytest.raises(BackendError, match="input 'input'"):
        backend(
            dict(
                input=np.zeros((1, 3, 512, 512), np.float32),
                img_shape=np.full((1, 2), 512, np.float32),
            )
        )


# --------------------------------------------------------------------------------------------
# the real .onnx -> engine -> run path, on a fake tensorrt module (no TensorRT, no GPU here)
# --------------------------------------------------------------------------------------------
@pytest.fixture
def fake_gpu(monkeypatch):
    """``tensorrt`` is tests/helpers/fake_tensorrt.py, torch sees one CUDA device, and the engine's
    buffers stay in host memory (the one thing a CPU machine cannot pretend)."""
    import contextlib

    from helpers import fake_tensorrt

    fake_tensorrt.calls.clear()
    monkeypatch.setattr(fake_tensorrt, 'fail_builder', False)
    monkeypatch.setitem(sys.modules, 'tensorrt', fake_tensorrt)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'Fake GPU 80GB')
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, 'device', lambda device: contextlib.nullcontext())
    stream = SimpleNamespace(cuda_stream=7, synchronize=lambda: None)
    monkeypatch.setattr(torch.cuda, 'current_stream', lambda device=None: stream)
    monkeypatch.setattr(
        TensorRTBackend,
        '_to_device',
        lambda self, array, dtype: torch.from_numpy(np.ascontiguousarray(array)).to(dtype),
    )
    monkeypatch.setattr(
        TensorRTBackend, '_empty', lambda self, shape, dtype: torch.empty(shape, dtype=dtype)
    )
    return fake_tensorrt


@pytest.fixture(scope='module')
def small_onnx(small_retinanet, small_retinanet_onnx):
    from conftest import random_batch

    _, cfg = small_retinanet
    img, metas = random_batch([(160, 224), (128, 192)])
    img_shape = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
    return small_retinanet_onnx('torchscript'), cfg, img, img_shape


def test_onnx_to_engine_to_run_path_on_a_fake_tensorrt(fake_gpu, small_onnx, tmp_path):
    """What ``tools/test.py CFG model.onnx --backend tensorrt`` does: the tools' default device
    string reaches the engine cache as a torch.device (it used to crash on ``startswith``)."""
    import shutil

    from deploy.backends import build_backend
    from deploy.backends.onnxruntime import OnnxRuntimeBackend

    source, cfg, img, img_shape = small_onnx
    onnx_path = tmp_path / 'small.onnx'
    shutil.copy(source, onnx_path)
    backend = build_backend('tensorrt', onnx_path, cfg=cfg, device='cpu', logger=lambda *a: None)
    assert backend.model_file.suffix == '.engine' and backend.model_file.parent == tmp_path
    assert backend.spec is not None and backend.spec.model_type == 'RetinaNet'
    assert backend.sidecar['gpu'] == dict(name='Fake GPU 80GB', compute_capability='9.0')
    # The timing cache belongs to one TensorRT version and GPU model.
    caches = sorted(p.name for p in tmp_path.glob('*.timing.cache'))
    assert caches == ['small.trt10.16.0.1.fake-gpu-80gb.timing.cache']
    # TF32 stays off for an fp32 engine.
    [build] = [c for c in fake_gpu.calls if c[0] == 'build']
    assert fake_gpu.BuilderFlag.TF32 not in build[1]

    inputs = dict(input=img.numpy(), img_shape=img_shape.numpy())
    expected = OnnxRuntimeBackend(onnx_path)(inputs)
    actual = backend(inputs)
    assert (expected['labels'] >= 0).sum() > 0, 'the reference detects something'
    np.testing.assert_array_equal(actual['labels'], expected['labels'])
    np.testing.assert_allclose(actual['dets'], expected['dets'], rtol=0, atol=1e-6)

    # A second backend reuses the cached engine instead of building again.
    again = build_backend('tensorrt', onnx_path, cfg=cfg, device='cuda:0', logger=lambda *a: None)
    assert again.model_file == backend.model_file
    assert sum(c[0] == 'build' for c in fake_gpu.calls) == 1


def test_tf32_only_when_asked(fake_gpu, small_onnx, tmp_path):
    import shutil

    source, cfg, *_ = small_onnx
    onnx_path = tmp_path / 'small.onnx'
    shutil.copy(source, onnx_path)
    TensorRTBackend(onnx_path, cfg, 'cuda', precision='tf32', logger=lambda *a: None)
    [build] = [c for c in fake_gpu.calls if c[0] == 'build']
    assert fake_gpu.BuilderFlag.TF32 in build[1]


def test_builder_creation_failure_is_one_line(fake_gpu, small_onnx, tmp_path, monkeypatch):
    import shutil

    source, cfg, *_ = small_onnx
    onnx_path = tmp_path / 'small.onnx'
    shutil.copy(source, onnx_path)
    monkeypatch.setattr(fake_gpu, 'fail_builder', True)
    with pytest.raises(BackendError, match='^TensorRT could not create its builder') as info:
        TensorRTBackend(onnx_path, cfg, 'cuda', logger=lambda *a: None)
    assert '\n' not in str(info.value)
    assert not list(tmp_path.glob('*.engine*'))


def test_one_command_deploy_to_tensorrt_on_a_fake_tensorrt(fake_gpu, tmp_path):
    """``detdeploy deploy ... --backend tensorrt``: export, engine, comparison, report."""
    import json

    from conftest import ROOT

    from deploy.deployment import DeployOptions, deploy_model

    options = DeployOptions(
        backend='tensorrt', images=(str(ROOT / 'demo' / 'demo.jpg'),), exporter='torchscript'
    )
    config = ROOT / 'configs' / 'bundled' / 'retinanet_r18_tiny_synthetic.py'
    checkpoint = ROOT / 'checkpoints' / 'retinanet_r18_tiny_synthetic.pth'
    deploy_model(config, checkpoint, tmp_path / 'trt', options, logger=lambda *a: None)
    report = json.loads((tmp_path / 'trt' / 'report.json').read_text())
    assert report['artefact'] == 'model.engine' and report['comparison']['passed']
    assert {'model.onnx', 'model.engine', 'comparison.png'} <= set(report['files'])
