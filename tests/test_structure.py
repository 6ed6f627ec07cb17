"""The command lines and the package structure: positionals after options, tools that import the
installed package, no import cycles or private-helper imports between modules of ``deploy``, and
no test module importing another."""

import pytest
from conftest import ROOT, _tool_module

CONFIG = 'configs/bundled/retinanet_r18_tiny_synthetic.py'


@pytest.mark.parametrize(
    'argv',
    [
        [CONFIG, '--exporter', 'dynamo', 'model.pth'],  # MMDetection's scripts write it so
        [CONFIG, 'model.pth', '--exporter', 'dynamo'],
        [CONFIG, '--checkpoint', 'model.pth', '--exporter', 'dynamo'],
    ],
)
def test_the_checkpoint_may_follow_options(argv):
    args = _tool_module('pytorch2onnx.py').parse_args(argv)
    assert (args.config, args.checkpoint, args.exporter) == (CONFIG, 'model.pth', 'dynamo')


def test_the_model_file_may_follow_options():
    args = _tool_module('test.py').parse_args(
        [CONFIG, '--backend', 'pytorch', 'model.pth', '--eval', 'bbox']
    )
    assert (args.config, args.model, args.backend) == (CONFIG, 'model.pth', 'pytorch')


def test_an_unknown_argument_is_still_one_error_line(capsys):
    with pytest.raises(SystemExit) as stop:
        _tool_module('pytorch2onnx.py').parse_args([CONFIG, 'model.pth', 'extra'])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith('error: unrecognized arguments: extra')


@pytest.fixture(scope='module')
def stats():
    return _tool_module('code_stats.py').collect()


def test_tools_import_the_installed_package(stats):
    assert stats['tools_sys_path_edits'] == []


def test_no_import_cycle_between_modules(stats):
    assert stats['import_cycles'] == []


def test_no_import_runs_back_up_between_packages(stats):
    # apis <-> benchmark and apis -> api were such imports, with no module cycle
    assert stats['layer_cycles'] == []


def test_no_module_imports_another_modules_private_helpers(stats):
    assert stats['private_imports'] == []


def test_the_stats_see_the_package(stats):
    # Guards the three tests above against a scan that reads nothing.
    assert stats['over_60_in_deploy'] > 0 and (ROOT / 'deploy' / 'apis').is_dir()
    assert any(name.startswith('deploy/apis/') for _, name in stats['longest_in_apis'])


def test_no_test_module_imports_another():
    """Shared helpers live in ``tests/helpers`` (and fixtures in ``conftest.py``): a test module
    imported by another runs its tests' module-level code twice and ties the two together."""
    import ast

    tests = ROOT / 'tests'
    test_modules = {path.stem for path in tests.glob('test_*.py')}
    assert len(test_modules) > 50  # the scan sees the suite
    offenders = []
    for path in [*tests.glob('*.py'), *(tests / 'helpers').rglob('*.py')]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.removeprefix('tests.').split('.')[0] in test_modules:
                    offenders.append(f'{path.relative_to(ROOT)}:{node.lineno} imports {name}')
    assert offenders == []
