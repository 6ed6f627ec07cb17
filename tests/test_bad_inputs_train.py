"""The bad-input catalogue, training and the tools that make its inputs (``train.py``,
``random_checkpoint.py``, ``generate_synthetic_coco.py``).

Each case runs a tool's ``main()`` in-process and must end in one ``error:`` line naming the
problem (never a traceback), leaving no output, partial file or temporary behind (the runner:
``tests/helpers/catalogue.py``).
"""

from __future__ import annotations

import pytest
from helpers.catalogue import (
    Case,
    W,
    case,
    run_case,
    workspace,
)


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


CASES: dict[str, Case] = {
    # ---- outputs --------------------------------------------------------------------------
    'data generator out-dir is a file': case(
        'generate_synthetic_coco.py',
        '--out-dir',
        '{bad}/plain_file',
        '--num-train',
        '0',
        '--num-val',
        '1',
        needles=('plain_file',),
    ),
    'random checkpoint out is a folder': case(
        'random_checkpoint.py', '{cfg}', '{bad}/a_folder', needles=('a_folder',)
    ),
    # ---- flags ----------------------------------------------------------------------------
    'train config missing': case(
        'train.py', '{bad}/nope.py', '--work-dir', W, needles=('nope.py',)
    ),
    'data generator negative count': case(
        'generate_synthetic_coco.py', '--num-val', '-1', needles=('--num-val',)
    ),
    'random checkpoint config missing': case(
        'random_checkpoint.py',
        '{bad}/nope.py',
        W + '/r.pth',
        needles=('nope.py',),
        absent=(W + '/r.pth',),
    ),
}


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input(name, ws, tmp_path):
    run_case(CASES[name], ws, tmp_path)
