"""The bad-input catalogue, the export job (``pytorch2onnx.py``): configs, checkpoints, images,
outputs and flags, and the export scenarios a table cannot express (interruptions, a failed
verification, stale temporaries, file permissions, cheap checks first).

Each case runs a tool's ``main()`` in-process and must end in one ``error:`` line naming the
problem (never a traceback), leaving no output, partial file or temporary behind (the runner:
``tests/helpers/catalogue.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
from helpers.catalogue import (
    EXP,
    FIXTURES,
    OUT,
    R50_CFG,
    RETINA_CFG,
    RETINA_CKPT,
    Case,
    W,
    assert_one_line_error,
    call,
    case,
    leftovers,
    run_case,
    workspace,
)


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


CASES: dict[str, Case] = {
    # ---- configs --------------------------------------------------------------------------
    'config missing': case(EXP[0], '{bad}/nope.py', '{ckpt}', needles=('nope.py', 'not found')),
    'config is a folder': case(EXP[0], '{bad}/a_folder', '{ckpt}', needles=('a_folder',)),
    'config syntax error': case(EXP[0], '{syntax_cfg}', '{ckpt}', needles=('syntax error', 'line')),
    'config base missing': case(
        EXP[0], str(FIXTURES / 'missing_base.py'), '{ckpt}', needles=('not found', '_base_')
    ),
    'unknown model type': case(
        *EXP,
        '--cfg-options',
        'model.neck.type=NoSuchNeck',
        *OUT,
        needles=('`NoSuchNeck`', 'registry'),
        absent=(W + '/m.onnx',),
    ),
    'cfg-options without =': case(
        *EXP, '--cfg-options', 'model.test_cfg.score_thr', needles=('key=value', 'score_thr')
    ),
    'cfg-options empty key': case(*EXP, '--cfg-options', '=3', needles=('key=value',)),
    'flip TTA at export': case(
        *EXP,
        '--cfg-options',
        'data.test.pipeline.1.flip=True',
        *OUT,
        needles=('flip test-time augmentation',),
        absent=(W + '/m.onnx',),
    ),
    # ---- checkpoints ----------------------------------------------------------------------
    'checkpoint missing': case(
        EXP[0],
        '{cfg}',
        '{bad}/missing.pth',
        *OUT,
        needles=('missing.pth', 'not found'),
        absent=(W + '/m.onnx',),
    ),
    'checkpoint is a folder': case(EXP[0], '{cfg}', '{bad}/a_folder', *OUT, needles=('a_folder',)),
    'checkpoint empty': case(
        EXP[0], '{cfg}', '{bad}/empty.bin', *OUT, needles=('empty.bin',), absent=(W + '/m.onnx',)
    ),
    'checkpoint noise': case(
        EXP[0], '{cfg}', '{bad}/noise.bin', *OUT, needles=('noise.bin',), absent=(W + '/m.onnx',)
    ),
    'checkpoint not a dict': case(
        EXP[0], '{cfg}', '{bad}/a_list.pth', *OUT, needles=('a_list.pth',)
    ),
    'checkpoint non-tensor values': case(
        EXP[0], '{cfg}', '{bad}/strings.pth', *OUT, needles=('strings.pth',)
    ),
    'malicious pickle (os.system)': case(
        EXP[0], '{cfg}', '{bad}/evil_reduce.pth', *OUT, needles=('evil_reduce.pth',)
    ),
    'malicious torch zip (exec)': case(
        EXP[0], '{cfg}', '{bad}/evil_zip.pth', *OUT, needles=('evil_zip.pth',)
    ),
    'headless checkpoint (export)': case(
        EXP[0],
        '{cfg}',
        '{bad}/headless.pth',
        *OUT,
        needles=('bbox_head', 'missing'),
        absent=(W + '/m.onnx',),
    ),
    'wrong-size checkpoint': case(
        EXP[0],
        str(R50_CFG),
        '{ckpt}',
        *OUT,
        needles=('does not match', 'backbone'),
        absent=(W + '/m.onnx',),
    ),
    'class list of another length': case(
        EXP[0],
        '{cfg}',
        '{bad}/three_classes.pth',
        *OUT,
        needles=('3 classes', 'predicts 6'),
        absent=(W + '/m.onnx',),
    ),
    # ---- images ---------------------------------------------------------------------------
    'input image missing': case(
        *EXP, '--input-img', '{bad}/nope.jpg', *OUT, needles=('nope.jpg',), absent=(W + '/m.onnx',)
    ),
    'input image undecodable': case(
        *EXP,
        '--input-img',
        '{bad}/text.jpg',
        *OUT,
        needles=('text.jpg', 'decode'),
        absent=(W + '/m.onnx',),
    ),
    'input image empty': case(*EXP, '--input-img', '{bad}/empty.bin', *OUT, needles=('empty.bin',)),
    'input image is a folder': case(
        *EXP, '--input-img', '{bad}/a_folder', *OUT, needles=('a_folder',)
    ),
    'input image truncated': case(
        *EXP,
        '--input-img',
        '{bad}/truncated.jpg',
        *OUT,
        needles=('truncated.jpg',),
        absent=(W + '/m.onnx',),
    ),
    'test image missing': case(
        *EXP,
        '--verify',
        '--test-img',
        '{bad}/nope.jpg',
        *OUT,
        needles=('nope.jpg',),
        absent=(W + '/m.onnx',),
    ),
    # ---- outputs --------------------------------------------------------------------------
    'export output is a folder': case(
        *EXP, '--output-file', '{bad}/a_folder', needles=('a_folder', 'directory')
    ),
    'export output under a file': case(
        *EXP, '--output-file', '{bad}/plain_file/m.onnx', needles=('plain_file', 'not a directory')
    ),
    # ---- flags ----------------------------------------------------------------------------
    'export device cuda without GPU': case(
        *EXP, '--device', 'cuda:0', *OUT, needles=('cuda:0', 'GPU'), absent=(W + '/m.onnx',)
    ),
    'shape with three numbers': case(
        *EXP,
        '--shape',
        '320',
        '320',
        '3',
        *OUT,
        needles=('--shape', '3 numbers'),
        absent=(W + '/m.onnx',),
    ),
    'shape zero': case(*EXP, '--shape', '0', *OUT, needles=('--shape',)),
    'opset 9': case(
        *EXP,
        '--opset-version',
        '9',
        *OUT,
        needles=('--opset-version 9', '16'),
        absent=(W + '/m.onnx',),
    ),
    'opset from the future': case(*EXP, '--opset-version', '99', *OUT, needles=('99',)),
    'unknown exporter': case(*EXP, '--exporter', 'tf2onnx', needles=('tf2onnx',)),
    'verify with skip-postprocess': case(
        *EXP,
        '--verify',
        '--skip-postprocess',
        *OUT,
        needles=('--skip-postprocess',),
        absent=(W + '/m.onnx',),
    ),
    'export without checkpoint': case(EXP[0], '{cfg}', *OUT, needles=('no checkpoint',)),
    'checkpoint given twice': case(
        *EXP, '--checkpoint', '{bad}/other.pth', needles=('checkpoint once',)
    ),
}


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input(name, ws, tmp_path):
    run_case(CASES[name], ws, tmp_path)


# --------------------------------------------------------------------------------------------
# scenarios a table cannot express
# --------------------------------------------------------------------------------------------
def _export_args(ws, out: Path, *extra) -> list:
    return [ws['cfg'], ws['ckpt'], '--exporter', 'torchscript', '--output-file', out, *extra]


@pytest.mark.parametrize(
    'flag, needle',
    [
        (('--opset-version', '9'), '--opset-version 9'),
        (('--output-file', '{bad}/a_folder'), 'directory'),
        (('--shape', '1', '2', '3'), '--shape'),
        (('--device', 'cuda'), 'GPU'),
        (('--input-img', '{bad}/nope.jpg'), 'nope.jpg'),
    ],
)
def test_cheap_checks_come_before_the_model_is_built(ws, tmp_path, monkeypatch, flag, needle):
    """These used to be reported after 28-72 s of model building and export."""
    import deploy.apis.export as export_api

    def too_late(*args, **kwargs):
        raise AssertionError('the model was built before the arguments were checked')

    monkeypatch.setattr(export_api, 'init_detector', too_late)
    args = [a.format(bad=ws['bad']) for a in flag]
    outcome = call('pytorch2onnx.py', ws['cfg'], ws['ckpt'], *args, cwd=tmp_path)
    assert_one_line_error(outcome, needle)


def test_interrupted_export_leaves_nothing(ws, tmp_path, monkeypatch):
    import deploy.apis.export as export_api

    out = tmp_path / 'm.onnx'

    def interrupted(model, img, img_shape, path, **kwargs):
        Path(path).write_bytes(b'half an onnx file')
        raise KeyboardInterrupt

    monkeypatch.setattr(export_api, 'export_onnx', interrupted)
    outcome = call('pytorch2onnx.py', *_export_args(ws, out), cwd=tmp_path)
    assert outcome.code == 130 and outcome.stderr.strip().splitlines()[-1] == 'interrupted'
    assert not out.exists() and leftovers(tmp_path) == []


def test_failed_verify_keeps_the_old_file(ws, tmp_path, monkeypatch):
    from deploy.export.verify import VerifyRow
    from deploy.tasks.detection import DetectionTask

    out = tmp_path / 'm.onnx'
    out.write_bytes(b'the previous, good export')
    monkeypatch.setattr(
        DetectionTask,
        'verify_export',
        lambda *a, **k: [VerifyRow('input-img', (1, 3, 8, 8), 1.0, False)],
    )
    outcome = call('pytorch2onnx.py', *_export_args(ws, out, '--verify'), cwd=tmp_path)
    assert outcome.code == 1 and 'verification FAILED' in outcome.stderr
    assert out.read_bytes() == b'the previous, good export'
    kept = tmp_path / 'm.failed-verify.onnx'
    assert kept.is_file() and onnx.load(str(kept)).graph.node
    assert f'kept as {kept}' in outcome.stdout
    assert leftovers(tmp_path) == []


def test_stale_temporaries_are_cleaned_and_live_ones_kept(ws, tmp_path):
    out = tmp_path / 'm.onnx'
    dead = tmp_path / '.m.onnx.999999999.deadbeef.tmp'  # no such process
    alive = tmp_path / f'.m.onnx.{os.getppid()}.0badf00d.tmp'  # a running writer's
    other = tmp_path / '.other.onnx.999999999.deadbeef.tmp'  # another output's
    for path in (dead, alive, other):
        path.write_bytes(b'x')
    outcome = call('pytorch2onnx.py', *_export_args(ws, out), cwd=tmp_path)
    assert outcome.code == 0, outcome.stderr
    assert out.is_file() and not dead.exists() and alive.exists() and other.exists()


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_honour_the_umask(ws, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        out, pkl = tmp_path / 'm.onnx', tmp_path / 'r.pkl'
        assert call('pytorch2onnx.py', *_export_args(ws, out), cwd=tmp_path).code == 0
        outcome = call(
            'test.py',
            ws['cfg'],
            out,
            '--backend',
            'onnxruntime',
            '--out',
            pkl,
            '--workers',
            '0',
            cwd=tmp_path,
        )
        assert outcome.code == 0, outcome.stderr
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == mode and pkl.stat().st_mode & 0o777 == mode


def test_scoped_type_names_load(tmp_path):
    """3.x configs write ``type='mmdet.RetinaNet'``: the same model."""
    from deploy.apis.model import init_detector

    plain, _ = init_detector(str(RETINA_CFG), str(RETINA_CKPT), logger=None)
    scoped, _ = init_detector(
        str(RETINA_CFG),
        str(RETINA_CKPT),
        cfg_options={'model.type': 'mmdet.RetinaNet'},
        logger=None,
    )
    assert type(scoped) is type(plain) and scoped.spec == plain.spec
