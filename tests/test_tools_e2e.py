"""tools/pytorch2onnx.py and tools/test.py end to end on a generated COCO-format data set."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SMALL_RETINANET, call_tool, make_detections_likely

from deploy.apis.model import init_detector
from deploy.apis.test import run_test
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.models.checkpoint import save_checkpoint

RETINA = str(ROOT / 'configs' / 'retinanet' / 'retinanet_r50_fpn_1x_coco.py')


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A 6-image val set, a small 6-class RetinaNet checkpoint, and the overrides that use them."""
    root = tmp_path_factory.mktemp('e2e')
    paths = generate_synthetic_coco(root / 'data', num_train=0, num_val=6, seed=3)
    options = dict(SMALL_RETINANET)
    options.update(
        {
            'model.bbox_head.num_classes': len(CATEGORIES),
            'data.test.ann_file': str(paths['val']),
            'data.test.img_prefix': str(root / 'data' / 'val2017'),
            # a small test scale keeps the run short
            'data.test.pipeline.1.img_scale': (512, 320),
        }
    )
    torch.manual_seed(1)
    model, _ = init_detector(RETINA, cfg_options=options)
    make_detections_likely(model, bias=-2.5)
    ckpt = root / 'small.pth'
    save_checkpoint(model, ckpt, meta={'CLASSES': tuple(c['name'] for c in CATEGORIES)})
    cli_options = [f'{k}={v}'.replace(' ', '') for k, v in options.items()]
    return dict(
        root=root, ckpt=ckpt, options=options, cli_options=cli_options, ann_file=paths['val']
    )


def run(tool, *args, cwd):
    outcome = call_tool(tool, *args, cwd=cwd)
    return outcome.code, outcome.stdout + outcome.stderr


def test_export_verify_then_evaluate_matches_pytorch(workspace):
    root = workspace['root']
    onnx_file = root / 'small.onnx'
    code, out = run(
        'pytorch2onnx.py',
        RETINA,
        workspace['ckpt'],
        '--output-file',
        onnx_file,
        '--dynamic-export',
        '--verify',
        '--exporter',
        'torchscript',
        '--input-img',
        ROOT / 'demo' / 'demo.jpg',
        '--cfg-options',
        *workspace['cli_options'],
        cwd=root,
    )
    assert code == 0, out
    assert 'verification passed' in out and out.count('PASS') == 3

    code, out = run(
        'test.py',
        RETINA,
        onnx_file,
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        '--out',
        root / 'ort.pkl',
        '--cfg-options',
        *workspace['cli_options'],
        cwd=root,
    )
    assert code == 0, out
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all' in out
    ort_results = pickle.loads((root / 'ort.pkl').read_bytes())
    assert len(ort_results) == 6 and sum(len(r['scores']) for r in ort_results) > 0

    pt = run_test(
        RETINA,
        workspace['ckpt'],
        'pytorch',
        cfg_options=workspace['options'],
        metrics=('bbox',),
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    ort = run_test(
        RETINA,
        onnx_file,
        'onnxruntime',
        cfg_options=workspace['options'],
        metrics=('bbox',),
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    assert sum(len(r) for r in pt.results) > 0, 'the reference must detect something'
    for key in ('bbox_mAP', 'bbox_mAP_50'):
        assert abs(pt.metrics[key] - ort.metrics[key]) <= 0.001, (key, pt.metrics, ort.metrics)


def test_format_only_and_show_dir(workspace):
    root = workspace['root']
    out_json, show_dir = root / 'res.json', root / 'vis'
    code, out = run(
        'test.py',
        RETINA,
        workspace['ckpt'],
        '--backend',
        'pytorch',
        '--format-only',
        out_json,
        '--show-dir',
        show_dir,
        '--show-score-thr',
        '0.05',
        '--cfg-options',
        *workspace['cli_options'],
        cwd=root,
    )
    assert code == 0, out
    dets = json.loads(out_json.read_text())
    assert dets and {'image_id', 'category_id', 'bbox', 'score'} <= set(dets[0])
    assert {d['category_id'] for d in dets} <= {c['id'] for c in CATEGORIES}
    assert len(list(show_dir.glob('*.jpg'))) == 6

    # Those results as a pseudo ground truth: the reference scores about 1.0 AP against it.
    pseudo = root / 'pseudo.json'
    code, out = run(
        'misc/pseudo_ground_truth.py',
        out_json,
        workspace['ann_file'],
        pseudo,
        '--num-images',
        4,
        cwd=root,
    )
    assert code == 0 and 'on 4 images' in out, out
    pt = run_test(
        RETINA,
        workspace['ckpt'],
        'pytorch',
        cfg_options=dict(workspace['options'], **{'data.test.ann_file': str(pseudo)}),
        metrics=('bbox',),
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    assert len(pt.results) == 4 and pt.metrics['bbox_mAP'] > 0.9, pt.metrics
    code, out = run(
        'misc/pseudo_ground_truth.py', root / 'none.json', pseudo, root / 'x.json', cwd=root
    )
    assert code == 2 and 'results file not found' in out, out


def test_faster_coco_eval_gives_identical_numbers(workspace):
    runs = [
        run_test(
            RETINA,
            workspace['ckpt'],
            'pytorch',
            cfg_options=workspace['options'],
            metrics=('bbox',),
            num_workers=0,
            progress=False,
            eval_backend=backend,
            logger=lambda *a: None,
        )
        for backend in ('pycocotools', 'faster-coco-eval')
    ]
    assert runs[0].metrics == pytest.approx(runs[1].metrics, abs=1e-6)


def test_distributed_evaluation_equals_one_process(workspace):
    """torchrun with 2 CPU ranks (gloo): every image evaluated once, the same AP as one process."""
    import socket

    root = workspace['root']
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    common = [
        RETINA,
        workspace['ckpt'],
        '--backend',
        'pytorch',
        '--eval',
        'bbox',
        '--workers',
        '0',
        '--cfg-options',
        *workspace['cli_options'],
    ]
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--nproc_per_node=2',
            f'--master_port={port}',
            str(ROOT / 'tools' / 'test.py'),
            *map(str, common),
            '--launcher',
            'pytorch',
            '--out',
            str(root / 'dist.pkl'),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=900,
        env={**os.environ, 'OMP_NUM_THREADS': '1'},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Only rank 0 evaluates: one COCO table.
    assert proc.stdout.count('Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all') == 1
    # Both throughputs of the run count the images of both ranks.
    assert ' images (pytorch fp32, 2 ranks): ' in proc.stdout, proc.stdout
    code, out = run('test.py', *common, '--out', root / 'single.pkl', cwd=root)
    assert code == 0, out
    dist = pickle.loads((root / 'dist.pkl').read_bytes())
    single = pickle.loads((root / 'single.pkl').read_bytes())
    assert [r['img_id'] for r in dist] == [r['img_id'] for r in single]
    assert sum(len(r['scores']) for r in single) > 0, 'the reference must detect something'
    for a, b in zip(dist, single):
        assert a['labels'].tolist() == b['labels'].tolist()
        assert abs(a['boxes'] - b['boxes']).max(initial=0) < 1e-3
    ap = [
        line
        for line in proc.stdout.splitlines() + out.splitlines()
        if 'IoU=0.50:0.95 | area=   all | maxDets=100' in line and 'Precision' in line
    ]
    assert len(ap) == 2 and ap[0].split('=')[-1] == ap[1].split('=')[-1], ap


def test_regression_job_passes_and_catches_a_broken_export(workspace):
    """The CI evaluation job: parity passes; a score_thr baked into the graph only fails it."""
    import numpy as np
    from conftest import write_pseudo_ground_truth

    from deploy.apis.regression import run_regression, write_reports

    root = workspace['root']
    # Random weights score ~0 AP on the real boxes: measure AP against the reference's own
    # detections instead, so that losing detections costs AP.
    first = run_test(
        RETINA,
        workspace['ckpt'],
        'pytorch',
        cfg_options=workspace['options'],
        num_workers=0,
        progress=False,
        logger=lambda *a: None,
    )
    pseudo = write_pseudo_ground_truth(first, workspace['ann_file'], root / 'pseudo.json')
    options = dict(workspace['options'], **{'data.test.ann_file': str(pseudo)})
    entry = dict(
        name='small_retinanet',
        config=RETINA,
        checkpoint=str(workspace['ckpt']),
        metrics=['bbox'],
        floor={'bbox': 20.0},
        backends={'onnxruntime': {'bbox': 0.1}},
        cfg_options=options,
        input_img=str(ROOT / 'demo' / 'demo.jpg'),
    )
    quiet = dict(exporter='torchscript', logger=lambda *a: None)
    rows = run_regression([entry], root / 'regression_ok', **quiet)
    assert [r.backend for r in rows] == ['pytorch', 'onnxruntime']
    assert all(r.passed for r in rows), [r.failures for r in rows]
    assert abs(rows[0].ap['bbox'] - rows[1].ap['bbox']) <= 0.1
    md, js = write_reports(rows, root / 'regression_ok')
    assert json.loads(js.read_text())['passed'] and 'small_retinanet' in md.read_text()

    # A graph that drops the reference's weaker half of detections must fail on AP.
    median = float(np.median(np.concatenate([r.scores for r in first.results])))
    rows = run_regression(
        [entry],
        root / 'regression_bad',
        export_cfg_options={'model.test_cfg.score_thr': median},
        **quiet,
    )
    assert rows[0].passed and not rows[1].passed
    assert any('below PyTorch' in f for f in rows[1].failures), rows[1].failures
