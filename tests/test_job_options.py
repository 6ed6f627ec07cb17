"""Each tool builds one typed, frozen options object from its parsed flags (the cheap checks run
there, before anything heavy): train, onnx2tensorrt, regression_test."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
from conftest import call_tool

from deploy.apis.regression import RegressionOptions
from deploy.apis.tensorrt import TensorRTOptions
from deploy.errors import BackendError, ConfigError
from deploy.training.engine import TrainOptions

ROOT = Path(__file__).resolve().parents[1]
CONFIG = 'configs/bundled/retinanet_r18_tiny_synthetic.py'


def _options(tool: str, function: str, *argv: str):
    """``tools/<tool>``'s options function on its parsed ``argv``."""
    spec = importlib.util.spec_from_file_location(f'options_{tool[:-3]}', ROOT / 'tools' / tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, function)(module.parse_args(list(argv)))


def test_train_flags_become_train_options():
    options = _options(
        'train.py', 'train_options', CONFIG, '--work-dir', 'w', '--epochs', '3', '--workers', '0'
    )
    assert options == TrainOptions(Path('w'), epochs=3, num_workers=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.epochs = 4
    assert _options('train.py', 'train_options', CONFIG, '--work-dir', 'w', '--no-progress') == (
        TrainOptions(Path('w'), progress=False)
    )


def test_train_checks_its_flags_before_reading_the_config(tmp_path):
    """``--epochs 0`` used to train the whole schedule; now it is one line, exit 2."""
    outcome = call_tool('train.py', 'nope.py', '--work-dir', 'w', '--epochs', '0', cwd=tmp_path)
    assert outcome.code == 2 and '--epochs must be at least 1' in outcome.stderr
    assert 'Traceback' not in outcome.stderr and not (tmp_path / 'w').exists()


def test_onnx2tensorrt_flags_become_tensorrt_options():
    options = _options(
        'onnx2tensorrt.py',
        'tensorrt_options',
        CONFIG,
        'model.onnx',
        '--fp16',
        '--opt-shape',
        '320',
        '480',
        '--workspace-size',
        '0.5',
    )
    assert options.precision == 'fp16' and options.workspace_size == 1 << 29
    assert options.input_shapes == {
        'input': dict(min_shape=None, opt_shape=[1, 3, 320, 480], max_shape=None)
    }
    assert options.device == 'cuda:0' and not options.verify and options.checkpoint is None
    with pytest.raises(BackendError, match='--verify needs --input-img'):
        TensorRTOptions(verify=True)


def test_regression_flags_become_regression_options():
    options = _options(
        'regression_test.py',
        'regression_options',
        'tests/regression/retinanet.yml',
        '--skip-backend',
        'tensorrt',
        '--skip-backend',
        'openvino',
        '--exporter',
        'torchscript',
        '--export-cfg-options',
        'model.test_cfg.score_thr=0.5',
    )
    assert options == RegressionOptions(
        export_cfg_options={'model.test_cfg.score_thr': 0.5},
        exporter='torchscript',
        skip_backends=('tensorrt', 'openvino'),
    )
    with pytest.raises(ConfigError, match='--exporter must be one of dynamo, torchscript'):
        RegressionOptions(exporter='onnx')
