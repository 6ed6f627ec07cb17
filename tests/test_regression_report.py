"""The regression job's verdicts and table, on rows made by hand (no model runs)."""

from pathlib import Path

from deploy.apis import regression
from deploy.apis.export import ExportResult
from deploy.apis.regression import BackendRow, format_markdown, run_regression

ENTRY = dict(
    name='m',
    config='c.py',
    checkpoint='c.pth',
    metrics=['bbox'],
    floor={'bbox': 50.0},
    backends={'onnxruntime': {'bbox': 0.1}, 'openvino': {'bbox': 0.5}},
)


def _fake_runs(monkeypatch, verified: bool, aps: dict[str, float]):
    def export(*_args, **_kwargs):
        return ExportResult(Path('m.onnx'), verify_rows=[] if verified else None)

    def evaluate(entry, backend, *_args):
        return BackendRow(entry['name'], backend, {'bbox': aps[backend]}, 12.5)

    monkeypatch.setattr(regression, 'export_model', export)
    monkeypatch.setattr(regression, '_evaluate', evaluate)


def test_rows_show_the_drop_and_the_tolerance(monkeypatch, tmp_path):
    _fake_runs(monkeypatch, True, {'pytorch': 68.5, 'onnxruntime': 68.0, 'openvino': 68.4})
    rows = run_regression([ENTRY], tmp_path, logger=lambda *a: None)
    assert [r.passed for r in rows] == [True, False, True]
    assert rows[1].drop == {'bbox': 0.5} and rows[1].tolerance == {'bbox': 0.1}
    table = format_markdown(rows)
    assert '| m | pytorch | 68.5 | 12.5 | ok |' in table
    assert '68.0 (drop 0.50, tol 0.1)' in table and 'FAIL: bbox AP 68.0 is 0.50' in table
    assert '68.4 (drop 0.10, tol 0.5)' in table


def test_rows_that_never_ran_say_so(monkeypatch, tmp_path):
    """A failed export verification: the backends are not run, and show no AP 0.0 / 0.0 ms."""
    _fake_runs(monkeypatch, False, {'pytorch': 68.5})
    rows = run_regression([ENTRY], tmp_path, logger=lambda *a: None)
    assert [r.backend for r in rows] == ['pytorch', 'onnxruntime', 'openvino']
    assert rows[0].passed and not any(r.ran for r in rows[1:])
    assert all('export verification failed' in r.failures[0] for r in rows[1:])
    table = format_markdown(rows)
    assert '| m | onnxruntime | not run | not run | FAIL: export verification failed' in table
    assert '0.0' not in table.replace('68.5', '')


def test_a_reference_that_cannot_run_is_not_ap_zero():
    row = BackendRow('m', 'pytorch', failures=['pytorch cannot run: bad checkpoint'])
    table = format_markdown([row, BackendRow('m', 'openvino', skipped='no BF16 here')])
    assert '| m | pytorch | not run | FAIL: pytorch cannot run' in table
    assert '| m | openvino | - | skipped: no BF16 here |' in table


def test_the_see_it_fail_example_runs_on_every_entry_it_names():
    """The tool's own example: its regression file loads and every entry's config takes the
    export override (a key unknown to one config would stop the job before the AP drop)."""
    import re
    import shlex

    from conftest import ROOT

    from deploy.config import load_config
    from deploy.spec import test_settings_for_model

    doc = (ROOT / 'tools' / 'regression_test.py').read_text()
    example = re.search(r'tools/regression_test\.py (tests/\S+) \\\n(.*)', doc).groups()
    words = shlex.split(example[1])
    override = words[words.index('--export-cfg-options') + 1]
    key, value = override.split('=')
    entries = regression.load_regression_file(ROOT / example[0])
    assert entries and all(set(e['backends']) == {'onnxruntime'} for e in entries)
    for entry in entries:
        cfg = load_config(str(ROOT / entry['config']), {key: float(value)})
        settings = test_settings_for_model(cfg.model, cfg.model.test_cfg)
        assert settings.final.score_thr == float(value), settings


def test_one_model_of_the_regression_file(tmp_path):
    """--models picks entries by name (quickstart and regression job); an unknown name is one
    line naming the entries there are."""
    import subprocess
    import sys

    import pytest

    from deploy.apis.regression import select_entries
    from deploy.errors import ConfigError

    second = dict(ENTRY, name='n')
    assert select_entries([ENTRY, second], ['n'], 'f.yml') == [second]
    assert select_entries([ENTRY, second], None, 'f.yml') == [ENTRY, second]
    with pytest.raises(ConfigError, match=r'no entry x in f.yml \(entries: m, n\)'):
        select_entries([ENTRY, second], ['x'], 'f.yml')
    root = Path(__file__).resolve().parents[1]
    for tool in ('tools/quickstart.py', 'tools/regression_test.py'):
        args = [] if 'quickstart' in tool else ['tests/regression/bundled.yml']
        done = subprocess.run(
            [sys.executable, tool, *args, '--models', 'nope', '--work-dir', str(tmp_path / 'w')],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().startswith('error: --models: no entry nope'), done.stderr
        assert 'Traceback' not in done.stderr
