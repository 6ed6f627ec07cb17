"""The bad-input catalogue, the test job (``test.py``): configs, test settings, checkpoints, ONNX
files, annotation files and class maps, outputs and flags, and the scenarios a table cannot
express (a full disk, stricter settings after the graph, classes matched by name).

Each case runs a tool's ``main()`` in-process and must end in one ``error:`` line naming the
problem (never a traceback), leaving no output, partial file or temporary behind (the runner:
``tests/helpers/catalogue.py``).
"""

from __future__ import annotations

import json

import pytest
from helpers.catalogue import (
    FIXTURES,
    MASK_CFG,
    TST,
    TST_PT,
    Case,
    W,
    assert_one_line_error,
    call,
    case,
    leftovers,
    run_case,
    workspace,
)


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


CASES: dict[str, Case] = {
    # ---- configs --------------------------------------------------------------------------
    'config not python': case(
        'test.py',
        str(FIXTURES / 'malformed_config.txt'),
        '{onnx}',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        needles=('malformed_config.txt',),
    ),
    'misspelt test_cfg key': case(
        *TST,
        '--cfg-options',
        'model.test_cfg.scor_thr=0.99',
        needles=('scor_thr', 'did you mean `score_thr`'),
    ),
    'misspelt nested key': case(
        *TST,
        '--cfg-options',
        'model.test_cfg.nms.iou_thr=0.6',
        needles=('iou_thr', '`iou_threshold`'),
    ),
    'test_cfg value not a number': case(
        *TST,
        '--cfg-options',
        'model.test_cfg.score_thr=abc',
        needles=('score_thr', 'must be a number', 'abc'),
    ),
    'test_cfg int given a float': case(
        *TST, '--cfg-options', 'model.test_cfg.max_per_img=2.5', needles=('max_per_img', 'integer')
    ),
    'unsupported nms type': case(
        *TST,
        '--cfg-options',
        'model.test_cfg.nms.type=soft_nms',
        needles=('soft_nms', 'not supported'),
    ),
    'unknown nms type': case(
        *TST, '--cfg-options', 'model.test_cfg.nms.type=fast', needles=('nms.type', "'fast'")
    ),
    'rpn nms across levels': case(
        'test.py',
        str(MASK_CFG),
        '{ckpt}',
        '--backend',
        'pytorch',
        '--eval',
        'bbox',
        '--cfg-options',
        'model.test_cfg.rpn.nms_across_levels=True',
        needles=('nms_across_levels',),
    ),
    'flip TTA': case(
        *TST, '--cfg-options', 'data.test.pipeline.1.flip=True', needles=('flip=True', 'flip=False')
    ),
    'multi-scale test': case(
        *TST,
        '--cfg-options',
        'data.test.pipeline.1.img_scale=[(416,256),(512,320)]',
        needles=('multi-scale',),
    ),
    'no normalisation': case(
        *TST,
        '--cfg-options',
        'data.test.pipeline.1.transforms.2.type=ToTensor',
        needles=('no normalisation',),
    ),
    'two normalisations': case(
        *TST,
        '--cfg-options',
        'model.data_preprocessor.mean=[0,0,0]',
        'model.data_preprocessor.std=[1,1,1]',
        needles=('ambiguous normalisation',),
    ),
    'loop test_cfg only': case(
        'test.py',
        str(FIXTURES / 'retinanet_3x_no_model_test_cfg.py'),
        '{onnx}',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        needles=('`model.test_cfg`',),
    ),
    '2.x data key on 3.x config': case(
        'test.py',
        str(FIXTURES / 'retinanet_3x.py'),
        '{onnx}',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        '--cfg-options',
        'data.test.ann_file=x.json',
        needles=('3.x config', 'test_dataloader.dataset.ann_file'),
    ),
    '3.x data key on 2.x config': case(
        *TST,
        '--cfg-options',
        'test_dataloader.dataset.ann_file=x.json',
        needles=('2.x config', 'data.test.ann_file'),
    ),
    'pad to fixed size': case(
        *TST,
        '--cfg-options',
        'data.test.pipeline.1.transforms.3.size=(64,64)',
        'data.test.pipeline.1.transforms.3.size_divisor=None',
        needles=('Pad(size=...)',),
    ),
    # ---- checkpoints ----------------------------------------------------------------------
    'malicious pickle in test.py': case(
        'test.py',
        '{cfg}',
        '{bad}/evil_reduce.pth',
        '--backend',
        'pytorch',
        '--eval',
        'bbox',
        needles=('evil_reduce.pth',),
    ),
    'headless checkpoint (test)': case(
        'test.py',
        '{cfg}',
        '{bad}/headless.pth',
        '--backend',
        'pytorch',
        '--eval',
        'bbox',
        needles=('bbox_head', 'missing'),
    ),
    'checkpoint classes in another order': case(
        'test.py',
        '{cfg}',
        '{bad}/reordered_classes.pth',
        '--backend',
        'pytorch',
        '--eval',
        'bbox',
        needles=('another order', "'square'"),
    ),
    # ---- images ---------------------------------------------------------------------------
    'data set image missing': case(
        *TST, '--cfg-options', 'data.test.ann_file={bad}/missing_image.json', needles=('gone.jpg',)
    ),
    # ---- ONNX files -----------------------------------------------------------------------
    'onnx missing': case(
        'test.py',
        '{cfg}',
        '{bad}/nope.onnx',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        needles=('nope.onnx',),
    ),
    'onnx empty': case(
        'test.py',
        '{cfg}',
        '{bad}/empty.bin',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        needles=('empty.bin',),
    ),
    'onnx noise': case(
        'test.py',
        '{cfg}',
        '{bad}/noise.bin',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        needles=('noise.bin',),
    ),
    'onnx is a folder': case(
        'test.py',
        '{cfg}',
        '{bad}/a_folder',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        needles=('a_folder',),
    ),
    'onnx without spec': case(
        'test.py',
        '{cfg}',
        '{bad}/foreign.onnx',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        needles=('foreign.onnx', 'no model spec'),
    ),
    'onnx of an older version': case(
        'test.py',
        '{cfg}',
        '{bad}/legacy.onnx',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        needles=('export it again',),
    ),
    'raw onnx evaluated': case(
        'test.py',
        '{cfg}',
        '{raw_onnx}',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        needles=('--skip-postprocess',),
    ),
    'onnx of another model': case(
        'test.py',
        str(MASK_CFG),
        '{onnx}',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        needles=('is a RetinaNet', 'MaskRCNN'),
    ),
    'onnx normalised differently': case(
        *TST,
        '--cfg-options',
        'data.test.pipeline.1.transforms.2.mean=[0,0,0]',
        needles=('pre-processes images differently', 'mean'),
    ),
    'lower score_thr than exported': case(
        *TST,
        '--cfg-options',
        'model.test_cfg.score_thr=0.01',
        needles=('score_thr=0.01', 'export again'),
    ),
    'other nms iou than exported': case(
        *TST,
        '--cfg-options',
        'model.test_cfg.nms.iou_threshold=0.6',
        needles=('nms.iou_threshold=0.6', 'export again'),
    ),
    'more detections than exported': case(
        *TST,
        '--cfg-options',
        'model.test_cfg.max_per_img=300',
        needles=('max_per_img=300', 'export again'),
    ),
    'other nms_pre than exported': case(
        *TST, '--cfg-options', 'model.test_cfg.nms_pre=10', needles=('nms_pre=10',)
    ),
    # ---- annotation files and classes -------------------------------------------------------
    'annotation missing': case(
        *TST,
        '--cfg-options',
        'data.test.ann_file={bad}/nope.json',
        needles=('nope.json', 'data.test.ann_file'),
    ),
    'annotation malformed json': case(
        *TST,
        '--cfg-options',
        'data.test.ann_file={bad}/malformed.json',
        needles=('malformed.json', 'not valid JSON'),
    ),
    'annotation is a list': case(
        *TST, '--cfg-options', 'data.test.ann_file={bad}/list.json', needles=('list.json',)
    ),
    'annotation without categories': case(
        *TST,
        '--cfg-options',
        'data.test.ann_file={bad}/no_categories.json',
        needles=('categories',),
    ),
    'annotation with no categories': case(
        *TST,
        '--cfg-options',
        'data.test.ann_file={bad}/empty_categories.json',
        needles=('no categories',),
    ),
    'annotation image without id': case(
        *TST, '--cfg-options', 'data.test.ann_file={bad}/image_without_id.json', needles=('id',)
    ),
    'annotation is a folder': case(
        *TST, '--cfg-options', 'data.test.ann_file={bad}/a_folder', needles=('a_folder',)
    ),
    'categories swapped': case(
        *TST,
        '--cfg-options',
        'data.test.ann_file={bad}/swapped.json',
        needles=('another order', '--class-map'),
    ),
    'categories renamed': case(
        *TST,
        '--cfg-options',
        'data.test.ann_file={bad}/renamed.json',
        needles=("'circle'", "'thing_0'"),
    ),
    'fewer categories': case(
        *TST,
        '--cfg-options',
        'data.test.ann_file={bad}/fewer.json',
        needles=('6 classes', '4 categories'),
    ),
    'categories swapped (pytorch)': case(
        *TST_PT,
        '--cfg-options',
        'data.test.ann_file={bad}/swapped.json',
        needles=('another order',),
    ),
    'class-map by name, nothing shared': case(
        *TST,
        '--class-map',
        'name',
        '--cfg-options',
        'data.test.ann_file={bad}/renamed.json',
        needles=('--class-map name',),
    ),
    'class-map file missing': case(*TST, '--class-map', '{bad}/nope.json', needles=('nope.json',)),
    'class-map not json': case(
        *TST, '--class-map', '{bad}/malformed.json', needles=('malformed.json', 'not valid JSON')
    ),
    'class-map a list': case(
        *TST, '--class-map', '{bad}/map_list.json', needles=('map_list.json', 'JSON object')
    ),
    'class-map to unknown category': case(
        *TST, '--class-map', '{bad}/map_unknown.json', needles=("'no such category'",)
    ),
    'class-map from unknown class': case(
        *TST, '--class-map', '{bad}/map_not_class.json', needles=("'hexagon'",)
    ),
    'class-map unknown mode': case(*TST, '--class-map', 'byname', needles=('--class-map',)),
    # ---- outputs --------------------------------------------------------------------------
    'test --out is a folder': case(
        *TST, '--out', '{bad}/a_folder.pkl', needles=('a_folder.pkl',), marks=['mkdir']
    ),
    'test --out wrong suffix': case(
        *TST, '--out', W + '/r.txt', needles=('.pkl',), absent=(W + '/r.txt',)
    ),
    'test --out under a file': case(
        *TST, '--out', '{bad}/plain_file/r.pkl', needles=('plain_file',)
    ),
    'test --format-only folder': case(
        'test.py',
        '{cfg}',
        '{onnx}',
        '--backend',
        'onnxruntime',
        '--format-only',
        '{bad}/a_folder',
        needles=('a_folder',),
    ),
    'test --show-dir is a file': case(
        *TST, '--show-dir', '{bad}/plain_file', needles=('plain_file', 'not a directory')
    ),
    'test --work-dir is a file': case(
        *TST, '--work-dir', '{bad}/plain_file', needles=('plain_file',)
    ),
    # ---- flags ----------------------------------------------------------------------------
    'batch size 0': case(*TST, '--batch-size', '0', needles=('--batch-size', '0')),
    'batch size -1': case(*TST, '--batch-size', '-1', needles=('--batch-size',)),
    'workers -1': case(*TST, '--workers', '-1', needles=('--workers',)),
    'threads 0': case(*TST, '--threads', '0', needles=('--threads',)),
    'num-images 0': case(*TST, '--num-images', '0', needles=('--num-images',)),
    'batch size not a number': case(*TST, '--batch-size', 'two', needles=('--batch-size',)),
    'show-score-thr out of range': case(
        *TST, '--show-score-thr', '2', needles=('--show-score-thr',)
    ),
    'eval-options without =': case(
        *TST, '--eval-options', 'classwise', needles=('KEY=VALUE', 'classwise')
    ),
    'eval-options unknown key': case(*TST, '--eval-options', 'clas=True', needles=('clas',)),
    'eval and format-only': case(*TST, '--format-only', needles=('exclusive',)),
    'nothing to do': case(
        'test.py', '{cfg}', '{onnx}', '--backend', 'onnxruntime', needles=('--eval',)
    ),
    'unknown backend': case(
        'test.py', '{cfg}', '{onnx}', '--backend', 'mxnet', '--eval', 'bbox', needles=('mxnet',)
    ),
    'unknown metric': case(
        'test.py',
        '{cfg}',
        '{onnx}',
        '--backend',
        'onnxruntime',
        '--eval',
        'keypoints',
        needles=('keypoints',),
    ),
    'launcher without torchrun': case(*TST, '--launcher', 'pytorch', needles=('torchrun',)),
    'test device cuda without GPU': case(*TST_PT, '--device', 'cuda', needles=('cuda', 'GPU')),
    'test device nonsense': case(*TST, '--device', 'tpu', needles=("'tpu'",)),
    'tensorrt not installed (test)': case(
        'test.py',
        '{cfg}',
        '{onnx}',
        '--backend',
        'tensorrt',
        '--eval',
        'bbox',
        needles=('TensorRT',),
    ),
}


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input(name, ws, tmp_path):
    run_case(CASES[name], ws, tmp_path)


# --------------------------------------------------------------------------------------------
# scenarios a table cannot express
# --------------------------------------------------------------------------------------------
def test_full_disk_on_out_keeps_the_evaluation(ws, tmp_path, monkeypatch):
    import errno

    import deploy.apis.run_record as test_api

    real = test_api.write_atomic

    def full_disk(path, data):
        if str(path).endswith('.pkl'):
            raise OSError(errno.ENOSPC, 'No space left on device', str(path))
        return real(path, data)

    monkeypatch.setattr(test_api, 'write_atomic', full_disk)
    pkl, work = tmp_path / 'r.pkl', tmp_path / 'work'
    outcome = call(
        'test.py',
        ws['cfg'],
        ws['onnx'],
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        '--out',
        pkl,
        '--work-dir',
        work,
        '--workers',
        '0',
        cwd=tmp_path,
    )
    line = assert_one_line_error(outcome, 'r.pkl', 'No space left')
    assert 'Average Precision' in outcome.stdout, 'the evaluation was printed'
    [metrics] = work.glob('eval_*.json')
    assert json.loads(metrics.read_text())['metrics']['bbox_mAP'] > 0
    assert not pkl.exists() and leftovers(tmp_path) == [], line


def _evaluate(ws, tmp_path, model, backend, *options):
    from deploy.apis.test import run_test

    return run_test(
        str(ws['cfg']),
        str(model),
        backend,
        cfg_options=list(options) or None,
        metrics=('bbox',),
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )


def test_stricter_settings_apply_exactly_after_the_graph(ws, tmp_path):
    """score_thr=1.0 on an exported model used to be ignored (same AP as without)."""
    from deploy.evaluation.parity import match_result_lists

    base = _evaluate(ws, tmp_path, ws['onnx'], 'onnxruntime')
    assert base.metrics['bbox_mAP'] > 0
    nothing = _evaluate(ws, tmp_path, ws['onnx'], 'onnxruntime', 'model.test_cfg.score_thr=1.0')
    assert nothing.metrics['bbox_mAP'] == 0 and sum(len(r) for r in nothing.results) == 0
    for option in ('model.test_cfg.score_thr=0.4', 'model.test_cfg.max_per_img=3'):
        graph = _evaluate(ws, tmp_path, ws['onnx'], 'onnxruntime', option)
        eager = _evaluate(ws, tmp_path, ws['ckpt'], 'pytorch', option)
        assert sum(len(r) for r in eager.results) > 0
        assert sum(len(r) for r in graph.results) < sum(len(r) for r in base.results)
        stats = match_result_lists(eager.results, graph.results)
        assert stats.matched == stats.num_ref == stats.num_test, (option, stats)
        assert graph.metrics['bbox_mAP'] == pytest.approx(eager.metrics['bbox_mAP'], abs=1e-3)


def test_class_map_by_name_scores_a_swapped_data_set(ws, tmp_path):
    from deploy.apis.test import run_test

    swapped = str(ws['bad'] / 'swapped.json')
    common = dict(metrics=('bbox',), num_workers=0, progress=False, logger=lambda *a: None)
    base = run_test(str(ws['cfg']), str(ws['onnx']), 'onnxruntime', **common)
    by_name = run_test(
        str(ws['cfg']),
        str(ws['onnx']),
        'onnxruntime',
        class_map='name',
        cfg_options={'data.test.ann_file': swapped},
        **common,
    )
    # Matched by name, circles are scored as circles (now the second category): the same AP.
    assert by_name.metrics['bbox_mAP'] == pytest.approx(base.metrics['bbox_mAP'], abs=1e-9)
    by_index = run_test(
        str(ws['cfg']),
        str(ws['onnx']),
        'onnxruntime',
        class_map='index',
        cfg_options={'data.test.ann_file': swapped},
        **common,
    )
    # By position they would be scored as squares: what an unchecked run used to report.
    assert by_index.metrics['bbox_mAP'] < base.metrics['bbox_mAP'] - 0.05
