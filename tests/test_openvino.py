"""The OpenVINO backend on the bundled models: the same AP as ONNX Runtime in FP32, BF16 and the
INT8 file from ``tools/quantize.py`` running, the IR cache, ``--verify-backends``, and bad input
as one line each."""

import builtins
import shutil
import sys

import helpers.bundled_exports as bundled
import helpers.catalogue as catalogue
import onnx
import pytest

from deploy.apis.test import run_test
from deploy.errors import BackendError, BackendUnavailable

pytest.importorskip('openvino', reason='pip install openvino (requirements/tests.txt)')

from deploy.backends.openvino import (  # noqa: E402
    OpenVINOBackend,
    cache_dir,
    cpu_capabilities,
    runtime_summary,
)

#: BF16 runs only where the CPU has it (AVX512-BF16 / AMX); elsewhere it must be refused
HAS_BF16 = 'BF16' in cpu_capabilities()


def _ap(model, model_file, backend, num_images, precision=None):
    metrics = ('bbox', 'segm') if model == 'mask_rcnn' else ('bbox',)
    run = run_test(
        bundled.CONFIGS[model],
        model_file,
        backend,
        cfg_options=bundled.data_options(),
        num_images=num_images,
        metrics=metrics,
        num_workers=0,
        num_threads=2,
        precision=precision,
        progress=False,
        logger=lambda *a: None,
    )
    return {m: run.metrics[f'{m}_mAP'] for m in metrics}


@pytest.mark.parametrize(
    'model, num_images',
    [
        ('mask_rcnn', 20),
        pytest.param('mask_rcnn', None, marks=pytest.mark.slow),
        pytest.param('retinanet', None, marks=pytest.mark.slow),
    ],
)
def test_fp32_ap_equals_onnxruntime(model, num_images):
    """The Done-when pin: OpenVINO FP32 AP = ONNX Runtime AP within 0.001 (box and mask)."""
    onnx_file = bundled.fp32_export(model)
    ort = _ap(model, onnx_file, 'onnxruntime', num_images)
    ov = _ap(model, onnx_file, 'openvino', num_images)
    assert all(v > 0.5 for v in ort.values()), ort  # the model detects: 0 = 0 proves nothing
    for metric in ort:
        assert abs(ov[metric] - ort[metric]) <= 0.001, (metric, ov, ort)


def test_bf16_and_int8_run_within_their_bounds():
    """BF16 (AVX512-BF16) and the shared INT8 QDQ file on OpenVINO, 20 val images: box AP within
    2 points of FP32 (measured on the whole val set: BF16 -0.1, INT8 -0.2)."""
    fp32 = bundled.fp32_export('retinanet')
    reference = _ap('retinanet', fp32, 'onnxruntime', 20)['bbox']
    int8 = _ap('retinanet', bundled.int8_export('retinanet').output_file, 'openvino', 20)['bbox']
    assert abs(int8 - reference) <= 0.02, (int8, reference)
    if HAS_BF16:
        bf16 = _ap('retinanet', fp32, 'openvino', 20, precision='bf16')['bbox']
        assert abs(bf16 - reference) <= 0.02, (bf16, reference)


def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch):
    """Without BF16 instructions the plugin would run FP32 under a "bf16" label: refused."""
    import deploy.backends.openvino as backend

    monkeypatch.setattr(backend, 'cpu_capabilities', lambda core=None: ['FP32', 'INT8'])
    with pytest.raises(BackendUnavailable, match='no BF16 support .*FP32, INT8.*fp32 or int8'):
        OpenVINOBackend(bundled.fp32_export('retinanet'), precision='bf16')


def test_precisions_and_kernels_really_used():
    """What the CPU plugin runs: convolutions in INT8 (u8) or BF16 as asked, NMS always FP32."""
    fp32 = bundled.fp32_export('retinanet')
    int8 = runtime_summary(OpenVINOBackend(bundled.int8_export('retinanet').output_file).compiled)
    assert any(k.startswith('Convolution u8') or k.startswith('Convolution i8') for k in int8)
    summaries = [int8]
    if HAS_BF16:
        bf16 = runtime_summary(OpenVINOBackend(fp32, precision='bf16').compiled)
        assert any(k.startswith('Convolution bf16') for k in bf16), bf16
        assert not any(k.startswith('Convolution f32') for k in bf16)
        summaries.append(bf16)
    for summary in summaries:
        assert any(k.startswith('NonMaxSuppression f32') for k in summary), summary


def test_ir_cache_is_keyed_by_version_hash_and_precision(tmp_path):
    import openvino

    source = tmp_path / 'model.onnx'
    shutil.copy(bundled.fp32_export('retinanet'), source)
    precisions = ['bf16', 'fp32'] if HAS_BF16 else ['fp32']
    for precision in precisions:
        OpenVINOBackend(source, precision=precision)
    names = sorted(p.name for p in cache_dir(source).glob('*.xml'))
    version = openvino.get_version().split('-')[0]
    assert len(names) == len(precisions) and all(n.startswith(f'ov{version}-') for n in names)
    assert all(n.endswith(f'-{p}.xml') for n, p in zip(names, precisions))
    # Another file content is another key (the stale entry stays unused).
    model = onnx.load(str(source))
    model.doc_string = 'changed'
    onnx.save(model, str(source))
    OpenVINOBackend(source)
    assert len(list(cache_dir(source).glob('*-fp32.xml'))) == 2
    # A read-only folder costs the cache, not the run.
    other = tmp_path / 'ro'
    other.mkdir()
    shutil.copy(source, other / 'model.onnx')
    other.chmod(0o555)
    try:
        OpenVINOBackend(other / 'model.onnx')
    finally:
        other.chmod(0o755)


def test_verify_backends_adds_a_table_per_engine(tmp_path):
    from deploy.apis.export import export_model

    extra = ('onnxruntime', 'openvino', *(['openvino:bf16'] if HAS_BF16 else []))
    lines = []
    result = export_model(
        bundled.CONFIGS['retinanet'],
        bundled.CHECKPOINTS['retinanet'],
        tmp_path / 'm.onnx',
        input_img=bundled.IMAGE,
        exporter='torchscript',
        verify=True,
        verify_backends=extra,
        logger=lines.append,
    )
    assert result.verified and list(result.backend_rows) == list(extra[1:])
    exact = result.backend_rows['openvino']
    assert all(r.stats.num_ref > 0 and r.stats.exact_fraction >= 0.95 for r in exact)
    for backend in extra[1:]:
        assert sum(f'{backend} dets' in line for line in lines) == 1


# --------------------------------------------------------------------------------------------
# bad input: one line each
# --------------------------------------------------------------------------------------------
def _test_tool(tmp_path, *args):
    model = args[0] if args else bundled.fp32_export('retinanet')
    return catalogue.call(
        'test.py',
        bundled.CONFIGS['retinanet'],
        model,
        '--eval',
        'bbox',
        '--num-images',
        '2',
        '--workers',
        '0',
        *args[1:],
        cwd=tmp_path,
    )


def test_without_the_package_one_line(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def blocked(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and (name == 'openvino' or name.startswith('openvino.')):
            raise ImportError(f'No module named {name!r}')
        return real_import(name, globals, locals, fromlist, level)

    for name in [m for m in sys.modules if m == 'openvino' or m.startswith('openvino.')]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, '__import__', blocked)
    outcome = _test_tool(tmp_path, bundled.fp32_export('retinanet'), '--backend', 'openvino')
    catalogue.assert_one_line_error(outcome, 'pip install openvino')


@pytest.mark.parametrize(
    'args, needles',
    [
        (('--backend', 'openvino', '--precision', 'fp16'), ('--precision', 'fp16')),
        (('--backend', 'onnxruntime', '--precision', 'bf16'), ('--precision', 'openvino')),
        (('--backend', 'openvino', '--precision', 'int8'), ('tools/quantize.py',)),
    ],
)
def test_bad_precision_one_line(tmp_path, args, needles):
    outcome = _test_tool(tmp_path, bundled.fp32_export('retinanet'), *args)
    catalogue.assert_one_line_error(outcome, *needles)


def test_a_file_openvino_cannot_read_one_line(tmp_path):
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'not a model at all')
    with pytest.raises(BackendError, match='cannot read'):
        OpenVINOBackend(garbage, cache=False)
    # A valid ONNX file with an op no runtime knows, carrying our model spec.
    model = onnx.load(str(bundled.fp32_export('retinanet')))
    model.graph.node[0].op_type = 'NoSuchOp'
    broken = tmp_path / 'broken.onnx'
    onnx.save(model, str(broken))
    outcome = _test_tool(tmp_path, broken, '--backend', 'openvino')
    catalogue.assert_one_line_error(outcome, 'OpenVINO cannot', 'broken.onnx')
