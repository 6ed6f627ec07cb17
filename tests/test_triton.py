"""Serving through a real Triton server: the repository writer, the server of the nvidia-pytriton
wheel (its own environment, made by tools/serving/make_triton_env.sh), AP and detections through
it against local ONNX Runtime, the load tool, and the bad-input lines.

The server fixture lives in this file only, so one xdist worker (``--dist loadfile``) owns it. It
listens on free loopback ports and is stopped after the module.
"""

import json
import pickle
from pathlib import Path

import onnx
import pytest
from conftest import ROOT, call_tool
from helpers.bundled_exports import CONFIGS, data_options, fp32_export

from deploy.evaluation.parity import match_detections
from deploy.serving.repository import (
    TRITON_BACKENDS,
    RepositoryOptions,
    check_config,
    onnx_io,
    read_config,
    write_repository,
)
from deploy.serving.server import LocalServer, ServerInstall
from deploy.spec import METADATA_KEY, ModelSpec
from deploy.structures import DetectionResult

MODELS = ('retinanet', 'mask_rcnn')


def _options_args() -> list[str]:
    return ['--cfg-options', *(f'{k}={v}' for k, v in data_options().items())]


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """The bundled RetinaNet and Mask R-CNN served through the python backend."""
    install = ServerInstall.find()
    if install is None:
        pytest.skip('no Triton server: run tools/serving/make_triton_env.sh (makes .venv-triton)')
    repository = tmp_path_factory.mktemp('triton') / 'models'
    for model in MODELS:
        # one thread per model instance: the suite runs one worker per core
        options = RepositoryOptions(model_name=model, threads=1, queue_delay_us=500)
        write_repository(fp32_export(model), repository, options)
    with LocalServer(repository, install=install, startup_timeout=90) as running:
        yield running


# --------------------------------------------------------------------------------------------
# through the server: detections and AP against local ONNX Runtime
# --------------------------------------------------------------------------------------------
def _evaluate(tmp_path, model: str, name: str, *backend_args) -> tuple[dict, list]:
    work = tmp_path / name
    metrics = ['bbox', 'segm'] if model == 'mask_rcnn' else ['bbox']
    outcome = call_tool(
        'test.py',
        CONFIGS[model],
        *backend_args,
        '--eval',
        *metrics,
        '--num-images',
        8,
        '--workers',
        0,
        '--out',
        work / 'results.pkl',
        '--work-dir',
        work,
        *_options_args(),
        cwd=ROOT,
    )
    assert outcome.code == 0, outcome.stderr
    [record] = work.glob('eval_*.json')
    # the test's own output file
    return json.loads(record.read_text())['metrics'], pickle.loads(
        (work / 'results.pkl').read_bytes()
    )


@pytest.mark.parametrize('model, protocol', [('retinanet', 'http'), ('mask_rcnn', 'grpc')])
def test_served_model_gives_the_local_detections_and_ap(server, tmp_path, model, protocol):
    url = server.http_url if protocol == 'http' else server.grpc_url
    local_metrics, local = _evaluate(
        tmp_path, model, 'local', fp32_export(model), '--backend', 'onnxruntime'
    )
    served_metrics, served = _evaluate(
        tmp_path,
        model,
        'served',
        *('--backend', 'triton', '--url', url, '--protocol', protocol),
        *('--model-name', model, '--concurrency', 3),
    )
    assert sum(len(r['scores']) for r in local) > 0, 'the local run must detect something'
    assert [r['img_id'] for r in served] == [r['img_id'] for r in local]
    for ref, test in zip(local, served):
        stats = match_detections(_result(ref), _result(test))
        assert stats.num_ref == stats.num_test == stats.exact, (ref['img_id'], stats)
        assert stats.max_box_err < 1e-3
        assert stats.min_mask_iou is None or stats.min_mask_iou > 0.999
    keys = [k for k in local_metrics if k.endswith('_mAP')]
    assert {'bbox_mAP'} <= set(keys) and (model != 'mask_rcnn' or 'segm_mAP' in keys)
    for key in keys:
        assert abs(served_metrics[key] - local_metrics[key]) <= 1e-3, key


def _result(record: dict) -> DetectionResult:
    return DetectionResult(
        record['boxes'], record['scores'], record['labels'], masks=record.get('masks')
    )


def test_load_is_bounded_and_measures(server):
    from deploy.serving.load import LoadOptions, run_load, table

    options = LoadOptions(concurrencies=(1, 2), seconds=5.0, max_requests=4, warmup=1)
    image = ROOT / 'demo' / 'demo.jpg'
    results = run_load(server.http_url, ['retinanet'], image, options, logger=lambda *a: None)
    assert [r.concurrency for r in results] == [1, 2]
    for result in results:
        assert 0 < result.requests <= 4 and result.seconds < 5.5
        assert result.throughput > 0 and 0 < result.p50_ms <= result.p99_ms
    assert table(results).count('| retinanet |') == 2


# --------------------------------------------------------------------------------------------
# every backend's config.pbtxt parses with Triton's protobuf and matches its model file
# --------------------------------------------------------------------------------------------
def _fake_engine(tmp_path: Path, onnx_file: Path) -> Path:
    """An engine file with the description tools/onnx2tensorrt.py writes beside it (the writer
    reads the inputs and outputs from the ONNX file it names; the engine bytes are copied)."""
    from deploy.backends.tensorrt.engine import SIDECAR_FORMAT, sidecar_path

    engine = tmp_path / 'model.engine'
    engine.write_bytes(b'not a real engine')
    spec = ModelSpec.from_json(_metadata(onnx.load(str(onnx_file), load_external_data=False)))
    sidecar = dict(format=SIDECAR_FORMAT, source_onnx=dict(path=str(onnx_file)))
    sidecar['model_spec'] = spec.to_dict()
    sidecar_path(engine).write_text(json.dumps(sidecar))
    return engine


def _metadata(model) -> str:
    return next(p.value for p in model.metadata_props if p.key == METADATA_KEY)


@pytest.mark.parametrize('backend', TRITON_BACKENDS)
def test_every_backend_config_parses_and_matches_the_model(tmp_path, backend):
    onnx_file = fp32_export('mask_rcnn')
    source = _fake_engine(tmp_path, onnx_file) if backend == 'tensorrt' else onnx_file
    options = RepositoryOptions(backend=backend, model_name='m', max_batch_size=4, threads=2)
    folder = write_repository(source, tmp_path / 'repo', options)
    config = read_config(folder / 'config.pbtxt')
    inputs, outputs = onnx_io(onnx.load(str(onnx_file), load_external_data=False))
    assert check_config(config, inputs, outputs) == []
    assert [o.name for o in config.output] == ['dets', 'labels', 'masks']
    assert config.max_batch_size == 4 and list(config.input[0].dims) == [3, -1, -1]
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    model_file = 'model.plan' if backend == 'tensorrt' else 'model.onnx'
    assert (folder / '1' / model_file).read_bytes() == Path(source).read_bytes()
    assert (folder / 'labels.txt').read_text().split() == list(
        ModelSpec.from_json(config.parameters['model_spec'].string_value).class_names
    )
    if backend == 'tensorrt':
        assert config.platform == 'tensorrt_plan'
    else:
        assert config.backend == backend
    assert (folder / '1' / 'model.py').is_file() == (backend == 'python')
    # the check has teeth: a wrong dimension is reported
    config.output[0].dims[1] = 4
    assert check_config(config, inputs, outputs) == [
        "output dets: config ('TYPE_FP32', (-1, 4)), model ('TYPE_FP32', (-1, 5))"
    ]


# --------------------------------------------------------------------------------------------
# bad input: one line each, exit 2
# --------------------------------------------------------------------------------------------
def _variant(tmp_path: Path, name: str, change) -> Path:
    """A copy of the RetinaNet export with ``change(model)`` applied."""
    model = onnx.load(str(fp32_export('retinanet')))
    change(model)
    path = tmp_path / f'{name}.onnx'
    onnx.save(model, str(path))
    return path


def _no_spec(model) -> None:
    del model.metadata_props[:]


def _raw_outputs(model) -> None:
    spec = ModelSpec.from_json(_metadata(model)).replace(skip_postprocess=True)
    next(p for p in model.metadata_props if p.key == METADATA_KEY).value = spec.to_json()


def _static_batch(model) -> None:
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = 1


@pytest.mark.parametrize(
    'change, flags, expected',
    [
        (_no_spec, [], 'carries no model spec'),
        (_raw_outputs, [], 'holds raw head outputs (--skip-postprocess)'),
        (_static_batch, ['--max-batch-size', 4], 'has a static batch of 1'),
        (None, ['--max-batch-size', 2, '--preferred-batch-sizes', 4], 'is above --max-batch-size'),
        (None, ['--backend', 'tensorrt'], '--backend tensorrt serves an engine'),
    ],
)
def test_repository_bad_input_is_one_line(tmp_path, change, flags, expected):
    model = _variant(tmp_path, 'bad', change) if change else fp32_export('retinanet')
    outcome = call_tool(
        'deploy2triton.py', model, '--repository', tmp_path / 'repo', *flags, cwd=tmp_path
    )
    assert outcome.code == 2, outcome.stdout + outcome.stderr
    assert outcome.stderr.count('\n') == 1 and outcome.stderr.startswith('error: ')
    assert expected in outcome.stderr
    assert not (tmp_path / 'repo').exists() or not any((tmp_path / 'repo').iterdir())


def test_server_bad_input_is_one_line(server, tmp_path):
    from deploy.serving.server import free_port

    cases = [
        (['--url', f'127.0.0.1:{free_port()}', '--model-name', 'retinanet'], 'no Triton server'),
        (['--url', server.http_url, '--model-name', 'yolo'], "no ready model 'yolo'"),
        (['--url', server.grpc_url, '--protocol', 'grpc', '--model-name', 'yolo'], 'serves: '),
    ]
    for flags, expected in cases:
        outcome = call_tool(
            'test.py',
            CONFIGS['retinanet'],
            *('--backend', 'triton', '--eval', 'bbox', *flags),
            cwd=tmp_path,
        )
        assert outcome.code == 2 and outcome.stderr.count('\n') == 1, outcome.stderr
        assert outcome.stderr.startswith('error: ') and expected in outcome.stderr


# --------------------------------------------------------------------------------------------
# the README's "Serve it" block, run as written (free ports instead of 8000 / 8001, fewer images
# and requests)
# --------------------------------------------------------------------------------------------
def test_readme_serve_it_runs_as_written(server, tmp_path):
    import os
    import re
    import subprocess

    from helpers.readme import COMMANDS

    from deploy.serving.server import free_port, wait_ready

    block = [argv for section, argv in COMMANDS if section == 'Serve it']
    assert [a[1] if a[0] in ('python', 'bash') else a[0] for a in block] == [
        'tools/serving/make_triton_env.sh',  # made by .ci/run (the fixture found it)
        'tools/deploy2triton.py',
        'tools/triton_server.py',
        'curl',
        'tools/test.py',
        'tools/test.py',
        'tools/triton_load.py',
        'kill',
    ]
    for name in ('configs', 'checkpoints', 'demo', 'tools'):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / 'work_dirs' / 'first').mkdir(parents=True)
    (tmp_path / 'work_dirs' / 'first' / 'retinanet.onnx').symlink_to(fp32_export('retinanet'))
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'synthetic_coco').symlink_to(
        Path(data_options()['data.test.ann_file']).parents[1]
    )
    ports = {'8000': str(free_port()), '8001': str(free_port())}

    def local(argv):
        return [re.sub(r'\b(8000|8001)\b', lambda m: ports[m.group(1)], a) for a in argv[2:]]

    assert call_tool('deploy2triton.py', *local(block[1]), cwd=tmp_path).code == 0
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    serving = subprocess.Popen(['python', block[2][1], *local(block[2])], cwd=tmp_path, env=env)
    try:
        assert wait_ready(f'127.0.0.1:{ports["8000"]}', 60, serving), 'the server did not start'
        fewer = ['--num-images', 8, '--workers', 0]
        aps = []
        for argv in block[4:6]:
            outcome = call_tool('test.py', *local(argv), *fewer, cwd=tmp_path)
            assert outcome.code == 0, outcome.stderr[-2000:]
            aps += re.findall(
                r'\(AP\) @\[ IoU=0.50:0.95 \| area=   all \| maxDets=100 \] = ([\d.]+)',
                outcome.stdout,
            )
        assert len(aps) == 2 and aps[0] == aps[1] and float(aps[0]) > 0
        load = call_tool('triton_load.py', *local(block[6]), '--max-requests', 4, cwd=tmp_path)
        assert load.code == 0 and load.stdout.count('| retinanet |') == 4, load.stderr
    finally:
        serving.terminate()  # the block's `kill %1`
        assert serving.wait(timeout=30) == 0
