"""The bad-input catalogue, the image demo (``image_demo.py``).

Each case runs a tool's ``main()`` in-process and must end in one ``error:`` line naming the
problem (never a traceback), leaving no output, partial file or temporary behind (the runner:
``tests/helpers/catalogue.py``).
"""

from __future__ import annotations

import pytest
from helpers.catalogue import (
    DEMO,
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
    # ---- checkpoints ----------------------------------------------------------------------
    'malicious pickle in demo': case(
        'image_demo.py', '{img}', '{cfg}', '{bad}/evil_zip.pth', needles=('evil_zip.pth',)
    ),
    'headless checkpoint (demo)': case(
        'image_demo.py',
        '{img}',
        '{cfg}',
        '{bad}/headless.pth',
        '--out-file',
        W + '/r.jpg',
        needles=('bbox_head',),
        absent=(W + '/r.jpg',),
    ),
    # ---- images ---------------------------------------------------------------------------
    'demo image missing': case(
        'image_demo.py', '{bad}/nope.jpg', '{cfg}', '{onnx}', needles=('nope.jpg',)
    ),
    'demo image undecodable': case(
        'image_demo.py',
        '{bad}/text.jpg',
        '{cfg}',
        '{onnx}',
        '--out-file',
        W + '/r.jpg',
        needles=('text.jpg',),
        absent=(W + '/r.jpg',),
    ),
    # ---- ONNX files -----------------------------------------------------------------------
    'demo onnx corrupt': case(
        'image_demo.py',
        '{img}',
        '{cfg}',
        '{bad}/noise.bin',
        '--backend',
        'onnxruntime',
        needles=('noise.bin',),
    ),
    'demo onnx lower score_thr': case(
        *DEMO, '--cfg-options', 'model.test_cfg.score_thr=0.0', needles=('score_thr=0.0',)
    ),
    # ---- outputs --------------------------------------------------------------------------
    'demo out-file is a folder': case(*DEMO, '--out-file', '{bad}/a_folder', needles=('a_folder',)),
    'demo out-file not an image': case(
        *DEMO, '--out-file', W + '/r.xyz', needles=('.xyz', 'image format'), absent=(W + '/r.xyz',)
    ),
    # ---- flags ----------------------------------------------------------------------------
    'demo device cuda without GPU': case(*DEMO, '--device', 'cuda', needles=('GPU',)),
}


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input(name, ws, tmp_path):
    run_case(CASES[name], ws, tmp_path)
