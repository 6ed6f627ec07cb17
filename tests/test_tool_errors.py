"""Bad input to the tools: one clean line naming the problem, exit code 2, no partial output."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMALL_RETINANET

from deploy.models.checkpoint import save_checkpoint

RETINA = str(ROOT / 'configs' / 'retinanet' / 'retinanet_r50_fpn_1x_coco.py')
SMALL = [f'{k}={v}'.replace(' ', '') for k, v in SMALL_RETINANET.items()]


def run_tool(tool, *args, cwd):
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / tool), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    return proc.returncode, proc.stdout, proc.stderr.strip()


def assert_one_line_error(code, stderr, *needles):
    assert code == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory, small_retinanet):
    path = tmp_path_factory.mktemp('ckpt') / 'small.pth'
    save_checkpoint(small_retinanet[0], path, meta={'CLASSES': ('a', 'b')})
    return path


def test_missing_config(tmp_path):
    code, _, err = run_tool(
        'pytorch2onnx.py', tmp_path / 'nope.py', tmp_path / 'x.pth', cwd=tmp_path
    )
    assert_one_line_error(code, err, 'nope.py')


def test_missing_checkpoint(tmp_path):
    code, _, err = run_tool('pytorch2onnx.py', RETINA, tmp_path / 'missing.pth', cwd=tmp_path)
    assert_one_line_error(code, err, 'missing.pth')
    assert not list(tmp_path.glob('*.onnx*'))


def test_unknown_registry_type(tmp_path, small_checkpoint):
    code, _, err = run_tool(
        'pytorch2onnx.py',
        RETINA,
        small_checkpoint,
        '--cfg-options',
        'model.neck.type=NoSuchNeck',
        cwd=tmp_path,
    )
    assert_one_line_error(code, err, 'NoSuchNeck')


def test_wrong_opset(tmp_path, small_checkpoint):
    code, _, err = run_tool(
        'pytorch2onnx.py',
        RETINA,
        small_checkpoint,
        '--opset-version',
        '11',
        '--cfg-options',
        *SMALL,
        cwd=tmp_path,
    )
    assert_one_line_error(code, err, 'opset-version 11')
    assert not list(tmp_path.glob('*.onnx*')), 'no partial output file'


def test_unreadable_image(tmp_path, small_checkpoint):
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'\xff\xd8 definitely not a jpeg')
    code, _, err = run_tool(
        'pytorch2onnx.py',
        RETINA,
        small_checkpoint,
        '--input-img',
        bad,
        '--cfg-options',
        *SMALL,
        cwd=tmp_path,
    )
    assert_one_line_error(code, err, 'broken.jpg')
    assert not list(tmp_path.glob('*.onnx*'))


def test_corrupt_onnx_file(tmp_path):
    bad = tmp_path / 'corrupt.onnx'
    bad.write_bytes(torch.randn(100).numpy().tobytes())
    code, _, err = run_tool(
        'test.py', RETINA, bad, '--backend', 'onnxruntime', '--eval', 'bbox', cwd=tmp_path
    )
    assert_one_line_error(code, err, 'corrupt.onnx')


def test_strict_checkpoint_with_wrong_keys(tmp_path, small_checkpoint):
    # The small checkpoint against the full R50 model: every backbone shape differs.
    code, _, err = run_tool('pytorch2onnx.py', RETINA, small_checkpoint, '--strict', cwd=tmp_path)
    assert_one_line_error(code, err)
    assert 'backbone' in err
    assert not list(Path(tmp_path).glob('*.onnx*'))
