"""The bad-input catalogue, the regression run, pseudo ground truth and the TensorRT build
(``regression_test.py``, ``pseudo_ground_truth.py``, ``onnx2tensorrt.py``), and the size of the
whole catalogue.

Each case runs a tool's ``main()`` in-process and must end in one ``error:`` line naming the
problem (never a traceback), leaving no output, partial file or temporary behind (the runner:
``tests/helpers/catalogue.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.catalogue import (
    Case,
    W,
    case,
    catalogue_cases,
    run_case,
    workspace,
)


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


CASES: dict[str, Case] = {
    # ---- annotation files and classes -------------------------------------------------------
    'pseudo gt results missing': case(
        'pseudo_ground_truth.py',
        '{bad}/nope.json',
        '{ann}',
        W + '/p.json',
        needles=('nope.json',),
        absent=(W + '/p.json',),
    ),
    'pseudo gt results malformed': case(
        'pseudo_ground_truth.py',
        '{bad}/malformed.json',
        '{ann}',
        W + '/p.json',
        needles=('malformed.json',),
        absent=(W + '/p.json',),
    ),
    'pseudo gt no detections': case(
        'pseudo_ground_truth.py',
        '{bad}/results.json',
        '{ann}',
        W + '/p.json',
        needles=('no usable detections',),
        absent=(W + '/p.json',),
    ),
    'pseudo gt annotation missing': case(
        'pseudo_ground_truth.py',
        '{bad}/results.json',
        '{bad}/nope.json',
        W + '/p.json',
        needles=('nope.json',),
    ),
    # ---- flags ----------------------------------------------------------------------------
    'tensorrt not installed (convert)': case(
        'onnx2tensorrt.py',
        '{cfg}',
        '{onnx}',
        '--output-file',
        W + '/m.engine',
        needles=('TensorRT',),
        absent=(W + '/m.engine',),
    ),
    'regression file missing': case('regression_test.py', '{bad}/nope.yml', needles=('nope.yml',)),
    'regression file malformed': case(
        'regression_test.py', '{bad}/regression.yml', needles=('regression.yml',)
    ),
    'regression entry incomplete': case(
        'regression_test.py', '{bad}/regression_nokey.yml', needles=('checkpoint',)
    ),
}


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input(name, ws, tmp_path):
    run_case(CASES[name], ws, tmp_path)


# --------------------------------------------------------------------------------------------
# the whole catalogue
# --------------------------------------------------------------------------------------------
def test_no_traceback_anywhere_in_the_catalogue():
    """The catalogue (every ``test_bad_inputs_<job>.py``) is big enough to mean something."""
    modules = [
        path
        for path in Path(__file__).parent.glob('test_bad_inputs_*.py')
        if 'from helpers.catalogue import' in path.read_text()  # this runner's tables
    ]
    assert len(modules) >= 6
    cases = catalogue_cases(modules)
    assert len(cases) >= 100
    tools = set(cases.values())
    assert tools >= {
        'pytorch2onnx.py',
        'test.py',
        'image_demo.py',
        'benchmark.py',
        'onnx2tensorrt.py',
        'regression_test.py',
        'pseudo_ground_truth.py',
        'random_checkpoint.py',
        'train.py',
        'generate_synthetic_coco.py',
    }
