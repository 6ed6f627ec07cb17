"""MobileNetV2 export and evaluation: both exporters against eager PyTorch (dynamic batch and
size), --verify with teeth, tools/pytorch2onnx.py + tools/test.py --eval accuracy end to end,
the regression job, bad input, and the bundled trained classifier."""

import numpy as np
import onnx
import pytest
import torch
from conftest import ROOT, SMALL_RETINANET, call_tool

from deploy.apis.export import build_pipeline, export_model
from deploy.apis.model import init_detector
from deploy.apis.test import run_test
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.datasets.pipeline import collate, load_image
from deploy.datasets.synthetic_classification import (
    CLASS_NAMES,
    generate_synthetic_classification,
)
from deploy.errors import ConfigError, ExportError
from deploy.evaluation.accuracy import topk_labels, write_pseudo_labels
from deploy.export.verify import VerifyCase
from deploy.export.verify_classifier import verify_classifier
from deploy.models.checkpoint import save_checkpoint
from deploy.models.random_weights import make_detections_likely
from deploy.spec import read_onnx_spec

CFG = str(ROOT / 'configs' / 'mobilenet_v2' / 'mobilenet_v2_b32x8_imagenet.py')
BUNDLED = str(ROOT / 'configs' / 'bundled' / 'mobilenet_v2_tiny_synthetic.py')
BUNDLED_CKPT = ROOT / 'checkpoints' / 'mobilenet_v2_tiny_synthetic.pth'
RETINA = str(ROOT / 'configs' / 'retinanet' / 'retinanet_r50_fpn_1x_coco.py')
DEMO = ROOT / 'demo' / 'demo.jpg'
#: the full-size ImageNet config shrunk: same code paths, a fraction of the time
SMALL_MOBILENET = {
    'model.backbone.widen_factor': 0.25,
    'model.head.num_classes': len(CLASS_NAMES),
    'data.test.pipeline.1.size': (40, -1),
    'data.test.pipeline.2.crop_size': 32,
}
QUIET = dict(progress=False, num_workers=0, logger=lambda *a: None)


def run_tool(tool, *args, cwd):
    """The tool's command line, run in-process: ``(exit code, stdout, stderr)``."""
    outcome = call_tool(tool, *args, cwd=cwd)
    return outcome.code, outcome.stdout, outcome.stderr


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """16 generated crops, a small random-weight 6-class MobileNetV2 checkpoint, and the
    overrides that use them."""
    root = tmp_path_factory.mktemp('mobilenet_v2')
    data = generate_synthetic_classification(root / 'data', num_train=0, num_val=16, seed=5)
    options = dict(SMALL_MOBILENET)
    options['data.test.data_prefix'] = str(data['val_img_prefix'])
    options['data.test.ann_file'] = str(data['val'])
    torch.manual_seed(2)
    model, cfg = init_detector(CFG, cfg_options=options, logger=None)
    make_detections_likely(model)
    ckpt = root / 'small.pth'
    save_checkpoint(model, ckpt, meta={'CLASSES': CLASS_NAMES})
    cli = [f'{k}={v}'.replace(' ', '') for k, v in options.items()]
    return dict(root=root, data=data, options=options, cli=cli, ckpt=ckpt, model=model, cfg=cfg)


def _cases(cfg, images):
    pipeline = build_pipeline(cfg)
    samples = [pipeline(image) for image in images]
    cases = [VerifyCase(f'image {i}', *collate([s])) for i, s in enumerate(samples)]
    return cases + [VerifyCase('batch', *collate(samples))]


@pytest.fixture(scope='module')
def dynamo_file(workspace):
    out = workspace['root'] / 'dynamo.onnx'
    export_model(
        CFG,
        workspace['ckpt'],
        out,
        input_img=DEMO,
        cfg_options=workspace['options'],
        dynamic=True,
        exporter='dynamo',
        logger=lambda *a: None,
    )
    return out


def test_dynamo_graph_matches_eager_at_any_batch_and_size(workspace, dynamo_file):
    model = onnx.load(str(dynamo_file))
    assert [i.name for i in model.graph.input] == ['input']
    assert [o.name for o in model.graph.output] == ['scores']
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', 3, 'height', 'width']
    spec = read_onnx_spec(model)
    assert (spec.task, spec.inputs.names, spec.outputs, spec.exporter) == (
        'classification',
        ('input',),
        ('scores',),
        'dynamo',
    )
    assert spec.class_names == CLASS_NAMES and spec.preprocess.crop_size == (32, 32)

    backend = OnnxRuntimeBackend(dynamo_file)
    x = torch.randn(3, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    ours = backend(dict(input=x.numpy()))['scores']
    with torch.no_grad():
        expected = workspace['model'].predict(x).numpy()
    assert expected.std() > 1e-3, 'the reference must tell classes apart'
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-5)
    assert (topk_labels(ours, 5) == topk_labels(expected, 5)).all()

    images = [load_image(p) for p in sorted((workspace['data']['val_img_prefix']).rglob('*.jpg'))]
    rows = verify_classifier(workspace['model'], backend, _cases(workspace['cfg'], images[:3]))
    assert [r.passed for r in rows] == [True] * 4, rows
    assert rows[-1].num_images == 3 and rows[-1].topk_agree == 3


def test_torchscript_export_leaves_the_model_in_eval_mode(workspace, tmp_path):
    """The TorchScript exporter restores the training flag of the module it traces; a fresh
    wrapper must not hand a training flag down to the model (BatchNorm would then use batch
    statistics in everything that runs after the export, e.g. --verify's reference)."""
    from deploy.export.onnx_export import export_onnx

    model = workspace['model']
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model.predict(x)
    export_onnx(model, x, torch.zeros(1, 2), tmp_path / 'ts.onnx', exporter='torchscript')
    assert not any(m.training for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), before)


def test_verify_fails_on_a_wrong_graph_and_on_flat_scores(workspace, dynamo_file, tmp_path):
    model = onnx.load(str(dynamo_file))
    gemm = next(n for n in model.graph.node if n.op_type == 'Gemm')
    weight = next(t for t in model.graph.initializer if t.name == gemm.input[1])
    values = onnx.numpy_helper.to_array(weight).copy()
    values[0] *= 1.1  # one class's logit 10% off
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    broken = tmp_path / 'broken.onnx'
    onnx.save(model, str(broken))
    cases = _cases(workspace['cfg'], [load_image(DEMO)])
    rows = verify_classifier(workspace['model'], OnnxRuntimeBackend(broken), cases)
    assert not any(r.passed for r in rows) and all(not r.scores_ok for r in rows)

    flat, _ = init_detector(CFG, cfg_options=workspace['options'], logger=None)
    torch.nn.init.zeros_(flat.head.fc.weight)
    rows = verify_classifier(flat, OnnxRuntimeBackend(dynamo_file), cases)
    assert all(r.flat_reference and not r.passed for r in rows)


def test_tools_export_verify_then_accuracy_equal_on_both_backends(workspace):
    """The issue's commands with --checkpoint as a flag, on the small model: export + simplify +
    verify, then test.py --eval accuracy (top-1 / top-5) on ONNX Runtime equal to PyTorch."""
    root = workspace['root']
    onnx_file = root / 'mobilenet_v2.onnx'
    code, out, err = run_tool(
        'pytorch2onnx.py',
        CFG,
        '--checkpoint',
        workspace['ckpt'],
        '--output-file',
        onnx_file,
        '--simplify',
        '--dynamic-export',
        '--verify',
        '--exporter',
        'torchscript',
        '--cfg-options',
        *workspace['cli'],
        cwd=root,
    )
    assert code == 0, out + err
    assert 'verification passed' in out and out.count('PASS') == 3, out
    assert 'top-5 = ref' in out

    code, out, err = run_tool(
        'test.py',
        CFG,
        onnx_file,
        '--backend',
        'onnxruntime',
        '--eval',
        'accuracy',
        '--cfg-options',
        *workspace['cli'],
        cwd=root,
    )
    assert code == 0, out + err
    line = next(x for x in out.splitlines() if x.startswith('accuracy/top1'))
    pt = run_test(CFG, workspace['ckpt'], 'pytorch', cfg_options=workspace['options'],
                  metrics=('accuracy',), **QUIET)  # fmt: skip
    assert line.startswith(
        f'accuracy/top1: {pt.metrics["accuracy/top1"]:.2f}  '
        f'accuracy/top5: {pt.metrics["accuracy/top5"]:.2f}  (onnxruntime, 16 images)'
    ), line

    # the demo draws a classifier's best classes
    code, out, err = run_tool(
        'image_demo.py', DEMO, CFG, onnx_file, '--out-file', root / 'demo.jpg',
        '--cfg-options', *workspace['cli'], cwd=root,
    )  # fmt: skip
    assert code == 0 and out.startswith('top-1 ') and (root / 'demo.jpg').is_file(), out + err

    # Random weights score chance on the real labels; against the reference's own top-1
    # (pseudo labels) PyTorch scores 100% and every differing image would cost ONNX Runtime.
    pseudo = write_pseudo_labels(
        pt.filenames, pt.scores, workspace['data']['val_img_prefix'], root / 'pseudo.txt'
    )
    options = dict(workspace['options'], **{'data.test.ann_file': str(pseudo)})
    runs = {
        name: run_test(CFG, model, name, cfg_options=options, metrics=('accuracy',), **QUIET)
        for name, model in (('pytorch', workspace['ckpt']), ('onnxruntime', onnx_file))
    }
    assert runs['pytorch'].metrics['accuracy/top1'] == 100.0
    assert runs['onnxruntime'].metrics == runs['pytorch'].metrics
    np.testing.assert_allclose(
        runs['onnxruntime'].scores, runs['pytorch'].scores, rtol=1e-3, atol=1e-5
    )


def test_regression_job_covers_a_classifier(workspace, monkeypatch):
    """... and a row this machine cannot run (OpenVINO BF16 on a CPU without BF16) is reported
    as skipped, not as a failure or a silent FP32 run."""
    import deploy.backends.openvino as openvino_backend
    from deploy.apis.regression import format_markdown, run_regression

    pytest.importorskip('openvino')
    monkeypatch.setattr(openvino_backend, 'cpu_capabilities', lambda core=None: ['FP32'])
    entry = dict(
        name='small_mobilenet_v2',
        config=CFG,
        checkpoint=str(workspace['ckpt']),
        metrics=['accuracy'],
        floor={'accuracy': 0.0},
        backends={'onnxruntime': {'accuracy': 0.0}, 'openvino:bf16': {'accuracy': 0.0}},
        cfg_options=workspace['options'],
        input_img=str(DEMO),
    )
    rows = run_regression(
        [entry], workspace['root'] / 'regression', exporter='torchscript', logger=lambda *a: None
    )
    assert [r.backend for r in rows] == ['pytorch', 'onnxruntime', 'openvino:bf16']
    assert all(r.passed for r in rows), [r.failures for r in rows]
    assert rows[0].ap['accuracy'] == rows[1].ap['accuracy']  # percent, not a fraction x 100
    assert 'no BF16 support' in rows[2].skipped and not rows[2].ap
    table = format_markdown(rows)
    assert 0.0 <= rows[0].ap['accuracy'] <= 100.0 and 'top-1 acc' in table
    assert '| openvino:bf16 | - | - | skipped: this CPU has no BF16 support' in table


def test_bad_input(workspace, small_retinanet, tmp_path):
    root = workspace['root']
    code, _, err = run_tool(
        'test.py',
        CFG,
        workspace['ckpt'],
        '--backend',
        'pytorch',
        '--eval',
        'bbox',
        '--cfg-options',
        *workspace['cli'],
        cwd=root,
    )
    assert code == 2 and err.strip().startswith('error: ') and len(err.strip().splitlines()) == 1
    assert '--eval accuracy' in err

    detector = tmp_path / 'retinanet.pth'
    save_checkpoint(small_retinanet[0], detector, meta={})
    with pytest.raises(ConfigError, match='--eval accuracy is for classifiers'):
        run_test(RETINA, detector, 'pytorch', cfg_options=SMALL_RETINANET,
                 metrics=('accuracy',), **QUIET)  # fmt: skip

    renamed = dict(workspace['options'], **{'data.test.classes': list('abcdef')})
    with pytest.raises(ConfigError, match='model classes differ'):
        run_test(CFG, workspace['ckpt'], 'pytorch', cfg_options=renamed, metrics=('accuracy',),
                 **QUIET)  # fmt: skip

    with pytest.raises(ExportError, match='--precision fp16 is not supported for classifiers'):
        export_model(CFG, workspace['ckpt'], tmp_path / 'x.onnx', input_img=DEMO, precision='fp16',
                     cfg_options=workspace['options'], logger=lambda *a: None)  # fmt: skip
    with pytest.raises(ConfigError, match='smaller than the centre crop'):
        export_model(CFG, workspace['ckpt'], tmp_path / 'x.onnx', input_img=DEMO, shape=(16, 16),
                     cfg_options=workspace['options'], logger=lambda *a: None)  # fmt: skip
    assert not list(tmp_path.glob('x*.onnx'))


def test_bundled_classifier_classifies_new_crops(workspace):
    """The shipped checkpoint loads strictly and recognises crops it never saw (another seed
    than its training and val splits)."""
    run = run_test(
        BUNDLED,
        BUNDLED_CKPT,
        'pytorch',
        cfg_options={
            'data.test.data_prefix': str(workspace['data']['val_img_prefix']),
            'data.test.ann_file': str(workspace['data']['val']),
        },
        metrics=('accuracy',),
        **QUIET,
    )
    assert run.class_names == CLASS_NAMES
    assert run.metrics['accuracy/top1'] >= 75.0, run.metrics


@pytest.mark.slow
def test_bundled_classifier_on_the_val_split_with_both_exporters(tmp_path):
    """The bundled model on its own 300-crop val split: above its regression floor, the same
    accuracy on ONNX Runtime from either exporter (tools, as a user runs them)."""
    import yaml

    entry = next(
        e
        for e in yaml.safe_load((ROOT / 'tests/regression/bundled.yml').read_text())['models']
        if e['name'] == 'mobilenet_v2_tiny_synthetic'
    )
    data = generate_synthetic_classification(tmp_path / 'data', num_train=0, num_val=300, seed=1)
    options = {
        'data.test.data_prefix': str(data['val_img_prefix']),
        'data.test.ann_file': str(data['val']),
    }
    reference = run_test(BUNDLED, BUNDLED_CKPT, 'pytorch', cfg_options=options,
                         metrics=('accuracy',), **QUIET)  # fmt: skip
    assert reference.metrics['accuracy/top1'] >= entry['floor']['accuracy']
    for exporter in ('dynamo', 'torchscript'):
        out = tmp_path / f'{exporter}.onnx'
        code, stdout, err = run_tool(
            'pytorch2onnx.py', BUNDLED, '--checkpoint', BUNDLED_CKPT, '--output-file', out,
            '--simplify', '--dynamic-export', '--verify', '--exporter', exporter, cwd=ROOT,
        )  # fmt: skip
        assert code == 0, stdout + err
        run = run_test(BUNDLED, out, 'onnxruntime', cfg_options=options, metrics=('accuracy',),
                       **QUIET)  # fmt: skip
        assert run.metrics == reference.metrics
