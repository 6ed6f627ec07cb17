"""The bad-input catalogue, the benchmark job (``benchmark.py``).

Each case runs a tool's ``main()`` in-process and must end in one ``error:`` line naming the
problem (never a traceback), leaving no output, partial file or temporary behind (the runner:
``tests/helpers/catalogue.py``).
"""

from __future__ import annotations

import pytest
from helpers.catalogue import (
    BENCH,
    Case,
    case,
    run_case,
    workspace,
)


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


CASES: dict[str, Case] = {
    # ---- checkpoints ----------------------------------------------------------------------
    'headless checkpoint (benchmark)': case(
        'benchmark.py',
        '{cfg}',
        '{bad}/headless.pth',
        '--iters',
        '1',
        '--warmup',
        '0',
        '--no-ort-profile',
        needles=('bbox_head',),
    ),
    # ---- images ---------------------------------------------------------------------------
    'benchmark image missing': case(*BENCH, '--image', '{bad}/nope.jpg', needles=('nope.jpg',)),
    # ---- ONNX files -----------------------------------------------------------------------
    'benchmark onnx corrupt': case(
        'benchmark.py',
        '{cfg}',
        '{bad}/noise.bin',
        '--backend',
        'onnxruntime',
        '--iters',
        '1',
        needles=('noise.bin',),
    ),
    # ---- outputs --------------------------------------------------------------------------
    'benchmark json is a folder': case(*BENCH, '--json', '{bad}/a_folder', needles=('a_folder',)),
    'benchmark plot under a file': case(
        *BENCH, '--plot', '{bad}/plain_file/p.png', needles=('plain_file',)
    ),
    # ---- flags ----------------------------------------------------------------------------
    'benchmark device cuda without GPU': case(*BENCH, '--device', 'cuda', needles=('GPU',)),
    'benchmark iters 0': case(
        'benchmark.py', '{cfg}', '{onnx}', '--iters', '0', needles=('--iters',)
    ),
    'benchmark warmup -1': case(*BENCH, '--warmup', '-1', needles=('--warmup',)),
    'benchmark batch 0': case(*BENCH, '--batch-size', '0', needles=('--batch-size',)),
    'benchmark shape 3 numbers': case(*BENCH, '--shape', '1', '2', '3', needles=('--shape',)),
    'benchmark model missing': case(
        'benchmark.py', '{cfg}', '{bad}/nope.onnx', needles=('nope.onnx',)
    ),
}


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input(name, ws, tmp_path):
    run_case(CASES[name], ws, tmp_path)
