"""The deployment matrix (tools/deploy_matrix.py): its rows' AP is what tools/test.py gives for
the same file, rows this machine cannot run are skipped with a reason, the floor gates."""

import json

import helpers.bundled_exports as bundled
import pytest
from conftest import call_tool

from deploy.benchmark.matrix import MatrixRow, format_table, pareto_front, recommend, speed_note


def test_pareto_front_keeps_the_points_nothing_beats():
    # (latency, AP): the second is slower and worse than the first; the last is slowest but best
    points = [(10.0, 68.0), (12.0, 67.0), (5.0, 60.0), (30.0, 69.0), (10.0, 66.0)]
    assert pareto_front(points) == [2, 0, 3]


def test_recommend_picks_the_fastest_row_within_the_budget():
    def row(backend, drop, ms, status='ok'):
        return MatrixRow(backend, 'x', ap={'bbox': 60 - drop}, drop={'bbox': drop},
                         latency_ms=ms, status=status)  # fmt: skip

    rows = [
        row('pytorch', 0.0, 100),
        row('a', 0.2, 20),
        row('b', 0.5, 10),
        row('c', 0, 5, 'failed: x'),
    ]
    assert recommend(rows, 0.3).backend == 'a'
    assert recommend(rows, 0.5).backend == 'b'
    assert recommend(rows[2:], 0.3) is None


def test_speed_note_names_the_fastest_row_and_the_roi_align_share():
    rows = [
        MatrixRow('pytorch', 'fp32', latency_ms=900.0),
        MatrixRow('onnxruntime', 'fp32', latency_ms=300.0),
        MatrixRow('onnxruntime', 'int8', latency_ms=120.0, roi_align_share=0.28),
        MatrixRow('openvino', 'int8', latency_ms=100.0),
        MatrixRow('tensorrt', 'fp16', status='skipped: no GPU'),
    ]
    note = speed_note(rows)
    assert note.startswith('fastest: openvino int8, 3.00x onnxruntime fp32')
    assert 'onnxruntime int8 2.50x' in note and 'is 28% of its INT8 run' in note
    assert speed_note(rows[:2]) == 'fastest: onnxruntime fp32, 1.00x onnxruntime fp32'
    assert speed_note(rows[4:]) is None
    report = dict(rows=[], recommended=None, max_ap_drop=0.3, note=note, failures=[])
    assert f'note: {note}' in format_table(report)


def test_unknown_row_is_one_line(tmp_path):
    out = call_tool(
        'deploy_matrix.py', bundled.CONFIGS['retinanet'], bundled.CHECKPOINTS['retinanet'],
        '--rows', 'onnxruntime:fp64', cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 2
    assert out.stderr.strip().startswith('error: --rows: unknown row')
    assert len(out.stderr.strip().splitlines()) == 1


def _ap(outcome_dir) -> float:
    [record] = outcome_dir.glob('eval_*.json')
    return 100.0 * json.loads(record.read_text())['metrics']['bbox_mAP']


@pytest.mark.filterwarnings('ignore')
def test_matrix_rows_match_test_tool_and_floor_gates(tmp_path):
    options = ['--cfg-options', *(f'{k}={v}' for k, v in bundled.data_options().items())]
    common = [bundled.CONFIGS['retinanet'], bundled.CHECKPOINTS['retinanet'], '--num-images', '4']
    rows = ['pytorch:fp32', 'onnxruntime:int8', 'tensorrt:fp16']
    out = call_tool(
        'deploy_matrix.py', *common, '--rows', *rows, '--exporter', 'torchscript',
        '--calib-images', '4', '--rounds', '1', '--iters', '2', '--warmup', '0',
        '--work-dir', tmp_path / 'm', '--json', tmp_path / 'm.json', '--plot', tmp_path / 'm.png',
        '--ap-floor', '101', *options, cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 1, out.stderr  # every row is below an AP floor of 101
    report = json.loads((tmp_path / 'm.json').read_text())
    by_name = {r['name']: r for r in report['rows']}
    assert list(by_name) == ['pytorch fp32', 'onnxruntime int8', 'tensorrt fp16']
    assert by_name['tensorrt fp16']['status'].startswith('skipped: ')
    ran = [r for r in report['rows'] if r['status'] == 'ok']
    assert len(ran) == 2 and all(r['ap']['bbox'] > 0 and r['latency_ms'] > 0 for r in ran)
    assert len(report['failures']) == 2 and 'below the floor 101' in report['failures'][0]
    assert by_name['pytorch fp32']['ratio'] == pytest.approx(1.0)
    assert '| onnxruntime int8 | ok |' in out.stdout and 'recommended: ' in out.stdout
    assert report['note'].startswith('fastest: ') and f'note: {report["note"]}' in out.stdout
    assert (tmp_path / 'm.png').stat().st_size > 0
    # the INT8 row's AP is what tools/test.py gives for that file
    work = tmp_path / 'test_int8'
    test = call_tool(
        'test.py', bundled.CONFIGS['retinanet'], tmp_path / 'm' / 'model.int8.onnx',
        '--backend', 'onnxruntime', '--eval', 'bbox', '--num-images', '4', '--work-dir', work,
        *options, cwd=tmp_path,
    )  # fmt: skip
    assert test.code == 0, test.stderr
    assert by_name['onnxruntime int8']['ap']['bbox'] == _ap(work)
