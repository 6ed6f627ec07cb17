"""tools/deploy_model.py (``detdeploy deploy``): one command from a checkpoint to a verified
folder with the backend's files, a comparison picture and a report."""

import json
import sys

import cv2
import helpers.bundled_exports as bundled
import pytest
from conftest import ROOT, call_tool

CFG = bundled.CONFIGS['retinanet']
CKPT = bundled.CHECKPOINTS['retinanet']
FAST = ('--exporter', 'torchscript')


def deploy(work_dir, *args):
    return call_tool('deploy_model.py', CFG, CKPT, '--work-dir', work_dir, *FAST, *args, cwd=ROOT)


def check_folder(work_dir, backend, precision, files):
    report = json.loads((work_dir / 'report.json').read_text())
    assert (report['backend'], report['precision']) == (backend, precision)
    assert report['steps']['export']['verified']
    comparison = report['comparison']
    assert comparison['passed'] and comparison['pytorch_detections'] > 0
    assert comparison['matched'] >= 0.9 * comparison['pytorch_detections']
    assert sorted(p.name for p in work_dir.iterdir()) == sorted(
        [*files, 'comparison.png', 'report.json', 'report.md']
    )
    picture = cv2.imread(str(work_dir / 'comparison.png'))
    image = cv2.imread(bundled.IMAGE)
    assert picture.shape == (image.shape[0] + 28, 2 * image.shape[1] + 8, 3)
    assert not [p for p in work_dir.parent.iterdir() if p.name.endswith('.tmp')]
    return report


def test_onnxruntime_fp32(tmp_path):
    done = deploy(tmp_path / 'ort', '--backend', 'onnxruntime')
    assert done.code == 0, done.stderr[-2000:]
    assert 'onnxruntime fp32 vs PyTorch' in done.stdout and ': passed' in done.stdout
    report = check_folder(tmp_path / 'ort', 'onnxruntime', 'fp32', ['model.onnx'])
    assert report['artefact'] == 'model.onnx'
    assert '| passed |' in (tmp_path / 'ort' / 'report.md').read_text()


def test_openvino_fp32_writes_the_ir_and_replaces_an_earlier_deploy(tmp_path):
    pytest.importorskip('openvino')
    work_dir = tmp_path / 'ov'
    work_dir.mkdir()
    (work_dir / 'report.json').write_text('{}')  # an earlier deploy's folder
    (work_dir / 'stale.onnx').write_text('old')
    done = deploy(work_dir, '--backend', 'openvino')
    assert done.code == 0, done.stderr[-2000:]
    report = check_folder(work_dir, 'openvino', 'fp32', ['model.onnx', 'model.xml', 'model.bin'])
    assert report['steps']['convert']['ir_max_abs_diff'] <= 1e-3


@pytest.mark.slow
def test_openvino_int8(tmp_path):
    pytest.importorskip('openvino')
    options = [f'{k}={v}' for k, v in bundled.data_options().items()]
    done = deploy(
        tmp_path / 'int8',
        *('--backend', 'openvino', '--precision', 'int8', '--calib-images', '8'),
        *('--check-images', '4', '--cfg-options', *options),
    )
    assert done.code == 0, done.stderr[-2000:]
    files = ['model.onnx', 'model.int8.onnx', 'model.xml', 'model.bin']
    report = check_folder(tmp_path / 'int8', 'openvino', 'int8', files)
    assert report['steps']['quantize']['quantized_layers'] > 0


def test_tensorrt_is_refused_in_one_line_without_its_module(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)  # missing, even where installed
    done = deploy(tmp_path / 'trt', '--backend', 'tensorrt')
    assert done.code == 2 and done.stdout == ''
    assert done.stderr.strip().splitlines() == [
        "error: --backend tensorrt needs the Python module 'tensorrt', which is not installed "
        'here (and an NVIDIA GPU): nothing was written'
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (('--backend', 'onnxruntime', '--precision', 'bf16'), 'onnxruntime is deployed in'),
        (('--backend', 'openvino', '--images', 'missing.jpg'), 'image not found: missing.jpg'),
    ],
)
def test_bad_requests_are_one_line(tmp_path, args, message):
    done = deploy(tmp_path / 'out', *args)
    assert done.code == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / 'out').exists()


def test_a_foreign_folder_is_refused(tmp_path):
    (tmp_path / 'mine.txt').write_text('keep me')
    done = deploy(tmp_path, '--backend', 'onnxruntime')
    assert done.code == 2 and 'holds files of something else' in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ['mine.txt']


def test_an_interrupted_deploy_leaves_nothing(tmp_path, monkeypatch):
    from deploy.deployment import Deployment

    def interrupted(self):
        (self.folder / 'model.onnx').write_text('half')
        raise KeyboardInterrupt

    monkeypatch.setattr(Deployment, 'export', interrupted)
    done = deploy(tmp_path / 'out', '--backend', 'onnxruntime')
    assert done.code == 130
    assert list(tmp_path.iterdir()) == []
