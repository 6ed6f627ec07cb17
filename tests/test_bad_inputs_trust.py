"""The bad-input catalogue, second round: the data a run reads (pickles, annotation files, class
maps), non-finite numbers, and files that must outlive a crash.

Same rules as the rest of the catalogue (``test_bad_inputs_*.py``): each case runs a tool's
``main()`` through ``run_cli`` and ends in one ``error:`` line (exit 2) naming the problem, or a
named ``warning:``; never a traceback, never executed code, never a leftover temporary.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, call_tool
from helpers.cli_checks import named_lines, one_line_error, temporaries

BUNDLED = ROOT / 'configs' / 'bundled'
RETINA_CFG = BUNDLED / 'retinanet_r18_tiny_synthetic.py'
RETINA_CKPT = ROOT / 'checkpoints' / 'retinanet_r18_tiny_synthetic.pth'
MASK_CFG = BUNDLED / 'mask_rcnn_r18_tiny_synthetic.py'
MASK_CKPT = ROOT / 'checkpoints' / 'mask_rcnn_r18_tiny_synthetic.pth'


class _RunsCode:
    """Pickles to a call of ``os.system`` that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    """A 4-image data set, the bundled RetinaNet pointed at it, and crafted files."""
    from deploy.apis.export import export_model
    from deploy.datasets.synthetic import generate_synthetic_coco

    root = tmp_path_factory.mktemp('trust')
    paths = generate_synthetic_coco(root / 'data', num_train=0, num_val=4, seed=11)
    img_dir = root / 'data' / 'val2017'
    cfg = root / 'retinanet.py'
    cfg.write_text(
        f'_base_ = {str(RETINA_CFG)!r}\n'
        f'data = dict(test=dict(ann_file={str(paths["val"])!r}, img_prefix={str(img_dir)!r}))\n'
    )
    marker = root / 'code_ran'
    bad = root / 'bad'
    bad.mkdir()
    (bad / 'evil_results.pkl').write_bytes(pickle.dumps([{'filename': _RunsCode(marker)}]))
    good = [
        dict(filename=str(img_dir / f'{i}.jpg'), scores=np.array([0.2, 0.8], np.float32))
        for i in range(2)
    ]
    (bad / 'results.pkl').write_bytes(pickle.dumps(good))
    _write_annotation_variants(json.loads(paths['val'].read_text()), bad)
    _write_nonfinite_files(bad, paths['val'])
    for name, mapping in CLASS_MAPS.items():
        (bad / f'{name}.json').write_text(json.dumps(mapping))
    onnx_file = root / 'retinanet.onnx'
    export_model(
        str(cfg),
        str(RETINA_CKPT),
        onnx_file,
        input_img=img_dir / sorted(os.listdir(img_dir))[0],
        dynamic=True,
        exporter='torchscript',
        logger=lambda *a: None,
    )
    _poison_output(onnx_file, bad / 'nan_scores.onnx')
    _write_spec_variants(onnx_file, bad)
    return dict(
        root=root,
        ann=paths['val'],
        img_dir=img_dir,
        img=img_dir / sorted(os.listdir(img_dir))[0],
        cfg=cfg,
        ckpt=RETINA_CKPT,
        onnx=onnx_file,
        marker=marker,
        bad=bad,
    )


def _annotation_variants(data: dict) -> dict:
    """Broken or doubtful copies of a good COCO file, by name."""
    imgs, anns, cats = data['images'], data['annotations'], data['categories']

    def but(**changes):
        return {**data, **changes}

    def ann0(**changes):
        return [{**anns[0], **changes}, *anns[1:]]

    no_segm = [{k: v for k, v in a.items() if k != 'segmentation'} for a in anns]
    return {
        'dup_image_ids': but(images=[*imgs, {**imgs[1], 'id': imgs[0]['id']}]),
        'dup_ann_ids': but(annotations=ann0(id=anns[1]['id'])),
        'dup_cat_ids': but(categories=[*cats, {**cats[0], 'name': 'another'}]),
        'unknown_image': but(annotations=ann0(image_id=999999)),
        'unknown_category': but(annotations=ann0(category_id=999)),
        'no_images': but(images=[], annotations=[]),
        'bbox_missing': but(annotations=ann0(bbox=None)),
        'bbox_nan': but(annotations=ann0(bbox=[1.0, 2.0, float('nan'), 3.0])),
        'bbox_negative': but(annotations=ann0(bbox=[1.0, 2.0, -5.0, 3.0])),
        'area_missing': but(annotations=[{k: v for k, v in anns[0].items() if k != 'area'}]),
        'zero_area_box': but(annotations=ann0(bbox=[5.0, 5.0, 0.0, 10.0])),
        'box_outside': but(annotations=ann0(bbox=[5.0, 5.0, 5000.0, 10.0])),
        'no_annotations': but(annotations=[]),
        'segm_missing': but(annotations=no_segm),
        'segm_empty': but(annotations=ann0(segmentation=[])),
    }


def _write_annotation_variants(data: dict, folder: Path) -> None:
    for name, variant in _annotation_variants(data).items():
        (folder / f'{name}.json').write_text(json.dumps(variant))


SHAPES = ('circle', 'square', 'triangle', 'star', 'ring', 'cross')
CLASS_MAPS = {
    'map_merge': {name: 'circle' if name in ('circle', 'ring') else name for name in SHAPES},
    'map_partial': {name: name for name in SHAPES[:2]},
    'map_nothing': {},
    'map_unknown_class': {'dragon': 'circle', **{name: name for name in SHAPES}},
    'map_unknown_category': {'circle': 'dragon'},
}


def _write_nonfinite_files(folder: Path, ann_file: Path) -> None:
    import torch

    checkpoint = torch.load(RETINA_CKPT, map_location='cpu', weights_only=True)
    key = next(k for k, v in checkpoint['state_dict'].items() if v.is_floating_point())
    checkpoint['state_dict'][key] = checkpoint['state_dict'][key].clone().fill_(float('nan'))
    torch.save(checkpoint, folder / 'nan_weights.pth')
    image_id = json.loads(ann_file.read_text())['images'][0]['id']
    det = dict(image_id=image_id, category_id=1, bbox=[1.0, 2.0, 30.0, 40.0], score=0.9)
    dets = [det, {**det, 'score': float('nan')}, {**det, 'bbox': [1.0, 2.0, float('inf'), 4.0]}]
    (folder / 'nan_results.json').write_text(json.dumps(dets))


def _poison_output(model_file: Path, out: Path) -> None:
    """A copy of ``model_file`` whose ``dets`` scores are NaN (an engine gone wrong)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(model_file)
    graph = model.graph
    [producer] = [n for n in graph.node if 'dets' in n.output]
    producer.output[list(producer.output).index('dets')] = 'dets_clean'
    nan = numpy_helper.from_array(np.array([0, 0, 0, 0, np.nan], np.float32), 'nan_score')
    graph.initializer.append(nan)
    graph.node.append(helper.make_node('Add', ['dets_clean', 'nan_score'], ['dets']))
    onnx.save(model, out)


SPEC_VARIANTS = {
    'spec_malformed': lambda spec: '{"spec_version": 1, "model_type": ',
    'spec_a_list': lambda spec: '[1, 2]',
    'spec_num_classes_text': lambda spec: json.dumps({**spec, 'num_classes': 'six'}),
    'spec_class_names_number': lambda spec: json.dumps({**spec, 'class_names': 5}),
    'spec_preprocess_text': lambda spec: json.dumps({**spec, 'preprocess': 'x'}),
    'spec_keep_ratio_text': lambda spec: json.dumps(
        {**spec, 'preprocess': {**spec['preprocess'], 'keep_ratio': 'yes'}}
    ),
}


def _write_spec_variants(model_file: Path, folder: Path) -> None:
    """Copies of ``model_file`` whose stored spec JSON is malformed or wrong-typed."""
    import onnx

    from deploy.spec import METADATA_KEY

    for name, make in SPEC_VARIANTS.items():
        model = onnx.load(model_file)
        [prop] = [p for p in model.metadata_props if p.key == METADATA_KEY]
        prop.value = make(json.loads(prop.value))
        onnx.save(model, folder / f'{name}.onnx')


@dataclass
class Case:
    """``tool`` run with ``args`` (``{name}`` filled from the workspace, ``{w}`` a fresh output
    folder) ends in one error line naming every needle (``code`` 2), or, with ``code`` 0, in
    success with a warning line naming every needle; ``absent`` paths must not exist."""

    tool: str
    args: tuple
    needles: tuple = ()
    absent: tuple = ()
    code: int = 2
    setup: str = ''  # name of a workspace file maker (see MAKERS)
    extra: dict = field(default_factory=dict)


def case(tool, *args, needles=(), absent=(), code=2, setup='') -> Case:
    return Case(tool, tuple(args), tuple(needles), tuple(absent), code, setup)


PSEUDO = 'pseudo_labels.py'
QUANT = (
    'quantize.py',
    '{cfg}',
    '{onnx}',
    '--output-file',
    '{w}/q.onnx',
    '--calib-images',
    '2',
    '--check-images',
    '0',
    '--calib-split',
    'test',
)
TEST_PT = ('test.py', '{cfg}', '{ckpt}', '--backend', 'pytorch')


def with_ann(name: str, metric: str = 'bbox') -> tuple:
    """``tools/test.py`` of the bundled RetinaNet on the annotation variant ``name``."""
    return (*TEST_PT, '--eval', metric, '--cfg-options', f'data.test.ann_file={{bad}}/{name}.json')


def ann_case(name, *needles, metric='bbox', code=2) -> Case:
    return case(*with_ann(name, metric), needles=(f'{name}.json', *needles), code=code)


CASES: dict[str, Case] = {
    # ---- (1) code execution through a pickle ----------------------------------------------
    'pseudo labels: results pickle runs os.system': case(
        PSEUDO,
        '{bad}/evil_results.pkl',
        '{img_dir}',
        '{w}/labels.txt',
        needles=('evil_results.pkl', 'system', 'not allowed'),
        absent=('{w}/labels.txt',),
    ),
    # ---- unsupported model options of the real-time family: one line, not a traceback ------
    'YOLOX with use_depthwise (YOLOX-nano)': case(
        'random_checkpoint.py',
        str(ROOT / 'configs/yolox/yolox_tiny_8xb8-300e_coco.py'),
        '{w}/r.pth',
        '--cfg-options',
        'model.backbone.use_depthwise=True',
        needles=('CSPDarknet', 'use_depthwise', 'not supported'),
        absent=('{w}/r.pth',),
    ),
    'RTMDet head with objectness': case(
        'random_checkpoint.py',
        str(ROOT / 'configs/rtmdet/rtmdet_tiny_8xb32-300e_coco.py'),
        '{w}/r.pth',
        '--cfg-options',
        'model.bbox_head.with_objectness=True',
        needles=('RTMDetSepBNHead', 'with_objectness', 'not supported'),
        absent=('{w}/r.pth',),
    ),
    # ---- (2) the annotation file ----------------------------------------------------------
    'coco: image ids collide': ann_case('dup_image_ids', 'images id', 'more than once'),
    'coco: annotation ids collide': ann_case('dup_ann_ids', 'annotations id', 'more than once'),
    'coco: category ids collide': ann_case('dup_cat_ids', 'categories id', 'more than once'),
    'coco: annotation of an unknown image': ann_case('unknown_image', 'image_id'),
    'coco: annotation of an unknown category': ann_case('unknown_category', 'category_id'),
    'coco: empty image list': ann_case('no_images', 'no images'),
    'coco: annotation without bbox': ann_case('bbox_missing', 'bbox'),
    'coco: NaN in a bbox': ann_case('bbox_nan', 'bbox', 'finite'),
    'coco: negative bbox width': ann_case('bbox_negative', 'bbox'),
    'coco: annotation without area': ann_case('area_missing', 'area'),
    'coco: segm without segmentation': ann_case('segm_missing', 'segm', metric='segm'),
    'coco: segm with an empty segmentation': ann_case('segm_empty', 'segm', metric='segm'),
    'coco: box with no area (warning)': ann_case('zero_area_box', 'boxes-without-area', code=0),
    'coco: box beyond its image (warning)': ann_case('box_outside', 'boxes-outside-image', code=0),
    'coco: no annotations (warning)': ann_case('no_annotations', 'no-annotations', code=0),
    # ---- (3) non-finite numbers -----------------------------------------------------------
    'NaN weights: export': case(
        'pytorch2onnx.py',
        '{cfg}',
        '{bad}/nan_weights.pth',
        '--output-file',
        '{w}/m.onnx',
        needles=('nan_weights.pth', 'NaN or Inf'),
        absent=('{w}/m.onnx',),
    ),
    'NaN weights: test.py': case(
        'test.py',
        '{cfg}',
        '{bad}/nan_weights.pth',
        '--backend',
        'pytorch',
        '--eval',
        'bbox',
        needles=('nan_weights.pth', 'NaN or Inf'),
    ),
    'NaN weights: demo': case(
        'image_demo.py',
        '{img}',
        '{cfg}',
        '{bad}/nan_weights.pth',
        needles=('nan_weights.pth', 'NaN'),
    ),
    'NaN scores from the engine: test.py --out': case(
        'test.py',
        '{cfg}',
        '{bad}/nan_scores.onnx',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        '--out',
        '{w}/r.pkl',
        needles=('nan_scores.onnx', 'onnxruntime', 'NaN or Inf', 'dets'),
        absent=('{w}/r.pkl',),
    ),
    'NaN scores from the engine: demo': case(
        'image_demo.py',
        '{img}',
        '{cfg}',
        '{bad}/nan_scores.onnx',
        '--backend',
        'onnxruntime',
        needles=('nan_scores.onnx', 'NaN or Inf'),
    ),
    'NaN in pseudo ground truth': case(
        'pseudo_ground_truth.py',
        '{bad}/nan_results.json',
        '{ann}',
        '{w}/gt.json',
        needles=('nan_results.json', '2 detection(s)', 'NaN'),
        absent=('{w}/gt.json',),
    ),
    # ---- (4) class maps -------------------------------------------------------------------
    'class map merges classes (note)': case(
        *TEST_PT,
        '--eval',
        'bbox',
        '--class-map',
        '{bad}/map_merge.json',
        needles=('merges 2 model classes', "'circle'", "'ring'"),
        code=0,
    ),
    'class map leaves classes out (note with counts)': case(
        *TEST_PT,
        '--eval',
        'bbox',
        '--class-map',
        '{bad}/map_partial.json',
        needles=('leaves out', 'of', 'detections'),
        code=0,
    ),
    'class map leaves every detection out (warning)': case(
        *TEST_PT,
        '--eval',
        'bbox',
        '--class-map',
        '{bad}/map_nothing.json',
        needles=('warning: the class map leaves out all',),
        code=0,
    ),
    'class map names an unknown class': case(
        *TEST_PT,
        '--eval',
        'bbox',
        '--class-map',
        '{bad}/map_unknown_class.json',
        needles=('map_unknown_class.json', "'dragon'", 'not a model class'),
    ),
    'class map names an unknown category': case(
        *TEST_PT,
        '--eval',
        'bbox',
        '--class-map',
        '{bad}/map_unknown_category.json',
        needles=('map_unknown_category.json', "'dragon'", 'not a data-set category'),
    ),
    # ---- (6) files ------------------------------------------------------------------------
    'quantize --verify: unreadable checkpoint, before quantising': case(
        *QUANT,
        '--verify',
        '--checkpoint',
        '{bad}/evil_results.pkl',
        needles=('evil_results.pkl',),
        absent=('{w}/q.onnx',),
    ),
    'quantize --verify: NaN checkpoint, before quantising': case(
        *QUANT,
        '--verify',
        '--checkpoint',
        '{bad}/nan_weights.pth',
        needles=('nan_weights.pth', 'NaN'),
        absent=('{w}/q.onnx',),
    ),
    # ---- (7) tracebacks that were ------------------------------------------------------------
    **{
        f'{name}: {tool}': case(
            *args, needles=(f'{name}.onnx', 'model spec', 'unreadable', 'export it again')
        )
        for name in SPEC_VARIANTS
        for tool, args in (
            (
                'test.py',
                (
                    'test.py',
                    '{cfg}',
                    f'{{bad}}/{name}.onnx',
                    '--backend',
                    'onnxruntime',
                    '--eval',
                    'bbox',
                ),
            ),
            (
                'demo',
                (
                    'image_demo.py',
                    '{img}',
                    '{cfg}',
                    f'{{bad}}/{name}.onnx',
                    '--backend',
                    'onnxruntime',
                ),
            ),
        )
    },
    'export with max_per_img=0': case(
        'pytorch2onnx.py',
        '{cfg}',
        '{ckpt}',
        '--output-file',
        '{w}/m.onnx',
        '--cfg-options',
        'model.test_cfg.max_per_img=0',
        needles=('max_per_img', 'at least 1'),
        absent=('{w}/m.onnx',),
    ),
    'export with rcnn max_per_img=0': case(
        'pytorch2onnx.py',
        str(MASK_CFG),
        str(MASK_CKPT),
        '--output-file',
        '{w}/m.onnx',
        '--cfg-options',
        'model.test_cfg.rcnn.max_per_img=0',
        needles=('model.test_cfg.rcnn.max_per_img', 'at least 1'),
        absent=('{w}/m.onnx',),
    ),
    'test.py --eval segm, annotations without segmentation (mask model)': case(
        'test.py',
        str(MASK_CFG),
        str(MASK_CKPT),
        '--backend',
        'pytorch',
        '--eval',
        'segm',
        '--cfg-options',
        'data.test.ann_file={bad}/segm_missing.json',
        'data.test.img_prefix={img_dir}',
        needles=('segm_missing.json', '--eval segm', 'segmentation'),
    ),
    # ---- (8) static shapes and batches ---------------------------------------------------
    'test.py --batch-size 2 says AP can depend on it': case(
        'test.py',
        '{cfg}',
        '{onnx}',
        '--backend',
        'onnxruntime',
        '--eval',
        'bbox',
        '--batch-size',
        '2',
        needles=('--batch-size 2', 'largest of its batch'),
        code=0,
    ),
}


def _fill(value: str, ws: dict, folder: Path) -> str:
    return value.format(w=folder, **{k: str(v) for k, v in ws.items()})


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input(name, ws, tmp_path):
    case = CASES[name]
    folder = tmp_path / 'w'
    folder.mkdir()
    if case.setup:
        MAKERS[case.setup](ws)
    args = [_fill(a, ws, folder) for a in case.args]
    outcome = call_tool(case.tool, *args, cwd=tmp_path)
    needles = [_fill(n, ws, folder) for n in case.needles]
    if case.code == 0:
        assert outcome.code == 0, outcome.stderr[-3000:]
        assert 'Traceback' not in outcome.stderr
        found = named_lines(outcome)
        assert any(all(n in line for n in needles) for line in found), (needles, found)
    else:
        one_line_error(outcome, *needles, code=case.code)
    for path in case.absent:
        assert not Path(_fill(path, ws, folder)).exists(), path
    assert temporaries(tmp_path) == []
    assert not ws['marker'].exists(), 'a crafted pickle ran code'


MAKERS: dict = {}


# --------------------------------------------------------------------------------------------
# (1) every pickle reader
# --------------------------------------------------------------------------------------------
def test_restricted_reader_still_reads_real_results(ws, tmp_path):
    """The allow-list is not so tight that a real results pickle (numpy arrays) is refused."""
    out = tmp_path / 'labels.txt'
    outcome = call_tool(PSEUDO, ws['bad'] / 'results.pkl', ws['img_dir'], out, cwd=tmp_path)
    assert outcome.code == 0, outcome.stderr
    assert out.read_text().split() == ['0.jpg', '1', '1.jpg', '1']


def test_resume_refuses_a_crafted_pickle(ws, tmp_path):
    """``tools/train.py --resume`` reads its checkpoint weights-only: a crafted one is an error."""
    import torch

    from deploy.errors import CheckpointError
    from deploy.training.engine import load_training_checkpoint

    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': _RunsCode(ws['marker'])}, path)
    with pytest.raises(CheckpointError, match='evil.pth'):
        load_training_checkpoint(path)
    assert not ws['marker'].exists()


# --------------------------------------------------------------------------------------------
# (5) caches are keyed on everything the model reads
# --------------------------------------------------------------------------------------------
def _save_with_external_data(model_file: Path, out: Path, cls_bias: float | None = None) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(model_file)
    if cls_bias is not None:  # a model that finds nothing: every class logit very low
        [bias] = [t for t in model.graph.initializer if t.name.endswith('retina_cls.bias')]
        silenced = np.full(numpy_helper.to_array(bias).shape, cls_bias, np.float32)
        bias.CopyFrom(numpy_helper.from_array(silenced, bias.name))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(
        model,
        out,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f'{out.name}.data',
        size_threshold=0,
    )


def test_openvino_cache_sees_new_external_weights(ws, tmp_path):
    """Replacing only the external data file beside a graph gives the new model's detections,
    never the cached IR of the old one."""
    pytest.importorskip('openvino')
    from deploy.apis.inference import inference_image

    served = tmp_path / 'served' / 'model.onnx'
    _save_with_external_data(ws['onnx'], served)
    silent = tmp_path / 'silent' / 'model.onnx'
    _save_with_external_data(ws['onnx'], silent, cls_bias=-50.0)
    quiet = dict(backend='openvino', logger=lambda *a: None)
    _, before, _ = inference_image(str(ws['cfg']), served, ws['img'], **quiet)
    assert len(before.scores) > 0
    data = served.with_name('model.onnx.data')
    data.write_bytes(silent.with_name('model.onnx.data').read_bytes())  # the graph is unchanged
    _, after, _ = inference_image(str(ws['cfg']), served, ws['img'], **quiet)
    assert len(after.scores) == 0, 'the IR cache served the old weights'
    assert len(list((served.parent / 'model.onnx.openvino').glob('*.xml'))) == 2
    assert temporaries(served.parent) == []


# --------------------------------------------------------------------------------------------
# (6) verify-before-replace and signal cleanup (one mechanism: deploy.fileio)
# --------------------------------------------------------------------------------------------
def _quantize_args(ws, out: Path) -> list:
    return [
        ws['cfg'],
        ws['onnx'],
        '--output-file',
        out,
        '--calib-images',
        '2',
        '--check-images',
        '0',
        '--calib-split',
        'test',
    ]


def test_failed_quantize_verify_keeps_the_previous_file(ws, tmp_path, monkeypatch):
    """The verification runs on the new file under its temporary name; a failure keeps the
    previous file and leaves the new one as ``<stem>.failed-verify.onnx``."""
    from types import SimpleNamespace

    import deploy.apis.quantize as quantize_api

    out = tmp_path / 'out' / 'q.onnx'
    out.parent.mkdir()
    out.write_bytes(b'the previous, good file')
    seen = []

    def failing(config, checkpoint, path, **kwargs):
        seen.append(Path(path))
        assert Path(path) != out and Path(path).is_file()
        return {'onnxruntime': [SimpleNamespace(passed=False)]}

    monkeypatch.setattr(quantize_api, 'verify_quantized', failing)
    args = _quantize_args(ws, out) + ['--verify', '--checkpoint', ws['ckpt']]
    outcome = call_tool('quantize.py', *args, cwd=tmp_path)
    assert outcome.code == 1, outcome.stderr[-2000:]
    assert 'Traceback' not in outcome.stderr
    assert 'verification FAILED' in outcome.stdout and 'was not replaced' in outcome.stdout
    assert seen and out.read_bytes() == b'the previous, good file'
    assert (out.parent / 'q.failed-verify.onnx').is_file()
    assert temporaries(tmp_path) == []


def _start_quantize(ws, out: Path):
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    tool = ROOT / 'tools' / 'quantize.py'
    args = [sys.executable, str(tool), *map(str, _quantize_args(ws, out))]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_working_folder(proc, folder: Path, timeout: float = 120.0) -> None:
    import time

    end = time.monotonic() + timeout
    while not any(p.is_dir() and p.name.endswith('.tmp') for p in folder.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, 'the quantisation never started'
        time.sleep(0.05)


@pytest.mark.parametrize('signum', ['SIGTERM', pytest.param('SIGKILL', marks=pytest.mark.slow)])
def test_killed_quantize_leaves_nothing(ws, tmp_path, signum):
    """A real signal to a real process in the middle of quantising: SIGTERM cleans up as Ctrl-C
    does (exit 143); after SIGKILL the next run that writes the same file removes what is left."""
    import signal

    from deploy.fileio import clean_stale_temporaries

    folder = tmp_path / 'out'
    folder.mkdir()
    (folder / 'q.onnx').write_bytes(b'previous')
    proc = _start_quantize(ws, folder / 'q.onnx')
    try:
        _wait_for_working_folder(proc, folder)
        proc.send_signal(getattr(signal, signum))
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if signum == 'SIGTERM':
        assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
        assert 'Traceback' not in stderr and 'terminated' in stderr
    else:
        clean_stale_temporaries(folder / 'q.onnx')  # what the next run does first
    assert sorted(p.name for p in folder.iterdir()) == ['q.onnx']
    assert (folder / 'q.onnx').read_bytes() == b'previous'


# --------------------------------------------------------------------------------------------
# (8) static shapes: one stated rule, followed by the reference, counted in test.py
# --------------------------------------------------------------------------------------------
def test_static_in_graph_export_verifies_on_a_portrait_image(ws, tmp_path):
    """The README's static ``--preprocess-in-graph --verify`` on ``demo/demo.jpg`` (portrait):
    the graph resizes by MMDetection's rule, and so does the reference it is verified against."""
    import cv2

    demo = ROOT / 'demo' / 'demo.jpg'
    h, w = cv2.imread(str(demo)).shape[:2]
    assert h > w, 'the case needs a portrait image'
    out = tmp_path / 'in_graph.onnx'
    args = [
        RETINA_CFG,
        RETINA_CKPT,
        '--preprocess-in-graph',
        '--verify',
        '--input-img',
        demo,
        '--exporter',
        'torchscript',
        '--output-file',
        out,
    ]
    outcome = call_tool('pytorch2onnx.py', *args, cwd=tmp_path)
    assert outcome.code == 0, outcome.stdout[-3000:] + outcome.stderr[-2000:]
    assert 'verification passed' in outcome.stdout and out.is_file()
    assert 'same resized sizes' in outcome.stdout


def test_static_file_says_how_many_images_it_fitted_differently(ws, tmp_path):
    """A static file fits every image into its canvas; test.py counts the images that differ
    from PyTorch's size (with the default canvas: exactly the portrait ones)."""
    import re

    static = tmp_path / 'static.onnx'
    export = [ws['cfg'], ws['ckpt'], '--exporter', 'torchscript', '--output-file', static]
    assert call_tool('pytorch2onnx.py', *export, cwd=tmp_path).code == 0
    outcome = call_tool(
        'test.py', ws['cfg'], static, '--backend', 'onnxruntime', '--eval', 'bbox', cwd=tmp_path
    )
    assert outcome.code == 0, outcome.stderr[-2000:]
    images = json.loads(Path(ws['ann']).read_text())['images']
    portrait = sum(img['height'] > img['width'] for img in images)
    [note] = [line for line in named_lines(outcome) if 'static' in line and 'input' in line]
    counted = re.search(r'(\d+) of (\d+) images', note)
    if portrait:
        assert counted and counted.groups() == (str(portrait), str(len(images))), note
    else:
        assert 'all' in note and counted is None, note


# --------------------------------------------------------------------------------------------
# (9) real config files run unchanged
# --------------------------------------------------------------------------------------------
MMDET3 = ROOT / 'tests' / 'data' / 'configs' / 'mmdet_3.3.0'
CORNERNET_3X = MMDET3 / 'cornernet' / 'cornernet_hourglass104_10xb5-crop511-210e-mstest_coco.py'
CORNERNET_2X = ROOT / 'configs' / 'cornernet' / 'cornernet_hourglass104_mstest_10x5_210e_coco.py'


def test_mmdet3_cornernet_config_without_resize_runs_unchanged():
    """MMDetection 3.3.0 leaves Resize out of CornerNet's test pipeline on purpose (the image
    keeps its size, RandomCenterCropPad pads it): the file reads as the same model, settings and
    pre-processing as the 2.x file, and its pipeline feeds the network the same tensor."""
    import cv2

    from deploy.config import get_test_dataset_cfg, load_config
    from deploy.config.loader import get_preprocess_cfg
    from deploy.config.model_spec import spec_from_config
    from deploy.datasets.pipeline import TestPipeline

    new, old = load_config(str(CORNERNET_3X)), load_config(str(CORNERNET_2X))
    assert get_preprocess_cfg(new).resize_factor == 1.0
    assert spec_from_config(new) == spec_from_config(old)
    assert get_test_dataset_cfg(new)['ann_file'].endswith('instances_val2017.json')
    image = cv2.imread(str(ROOT / 'demo' / 'demo.jpg'))
    (a, meta_a), (b, meta_b) = (TestPipeline(get_preprocess_cfg(c))(image) for c in (new, old))
    assert a.shape == b.shape and bool((a == b).all())
    assert meta_a['img_shape'] == image.shape[:2] and meta_a['img_offset'] == meta_b['img_offset']


# --------------------------------------------------------------------------------------------
# (10) configs are code: a model file is scored without one
# --------------------------------------------------------------------------------------------
def _same_metrics_without_config(cfg, model_file, ann, img_dir, backend, metrics) -> dict:
    from deploy.apis.test import TestSet, run_test

    quiet = dict(metrics=metrics, progress=False, num_workers=0, logger=lambda *a: None)
    with_config = run_test(str(cfg), str(model_file), backend, **quiet).metrics
    alone = run_test(
        None, str(model_file), backend, test_set=TestSet(str(ann), str(img_dir)), **quiet
    )
    assert with_config and alone.metrics == with_config, (alone.metrics, with_config)
    return with_config


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_model_file_alone_scores_like_the_config(ws, tmp_path, backend):
    """``tools/test.py MODEL.onnx --ann-file A --img-dir D --eval bbox`` runs no config code and
    gives exactly the AP of the run with the config."""
    if backend == 'openvino':
        pytest.importorskip('openvino')
    metrics = _same_metrics_without_config(
        ws['cfg'], ws['onnx'], ws['ann'], ws['img_dir'], backend, ('bbox',)
    )
    assert metrics['bbox_mAP'] > 0
    args = [ws['onnx'], '--ann-file', ws['ann'], '--img-dir', ws['img_dir'], '--eval', 'bbox']
    outcome = call_tool('test.py', *args, '--backend', backend, cwd=tmp_path)
    assert outcome.code == 0, outcome.stderr[-2000:]
    assert f'{metrics["bbox_mAP"]:.3f}' in outcome.stdout


@pytest.mark.slow
@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_mask_model_file_alone_scores_like_the_config(ws, tmp_path_factory, backend):
    """The same for the bundled Mask R-CNN, bbox and segm."""
    from deploy.apis.export import export_model

    if backend == 'openvino':
        pytest.importorskip('openvino')
    folder = tmp_path_factory.mktemp('mask')
    cfg = folder / 'mask_rcnn.py'
    cfg.write_text(
        f'_base_ = {str(MASK_CFG)!r}\n'
        f'data = dict(test=dict(ann_file={str(ws["ann"])!r}, img_prefix={str(ws["img_dir"])!r}))\n'
    )
    onnx_file = folder / 'mask_rcnn.onnx'
    export_model(
        str(cfg),
        str(MASK_CKPT),
        onnx_file,
        input_img=ws['img'],
        dynamic=True,
        exporter='torchscript',
        logger=lambda *a: None,
    )
    metrics = _same_metrics_without_config(
        cfg, onnx_file, ws['ann'], ws['img_dir'], backend, ('bbox', 'segm')
    )
    assert metrics['bbox_mAP'] > 0 and metrics['segm_mAP'] > 0


def test_model_file_alone_bad_inputs(ws, tmp_path):
    """Without a config: the data set is required, --cfg-options is refused, and a checkpoint
    (which needs its config's code to be built) is refused, each in one line."""
    one_line_error(call_tool('test.py', ws['onnx'], '--eval', 'bbox', cwd=tmp_path), '--ann-file')
    data = ['--ann-file', ws['ann'], '--img-dir', ws['img_dir'], '--eval', 'bbox']
    outcome = call_tool('test.py', ws['onnx'], *data, '--cfg-options', 'a=1', cwd=tmp_path)
    one_line_error(outcome, '--cfg-options')
    outcome = call_tool('test.py', ws['ckpt'], *data, cwd=tmp_path)
    one_line_error(outcome, 'pytorch', 'config')


def test_demo_runs_a_model_file_alone(ws, tmp_path):
    """``demo/image_demo.py IMG MODEL.onnx``: the same detections as with the config."""
    drawn = []
    for config in ([ws['cfg']], []):
        out = tmp_path / f'{len(config)}.jpg'
        args = [ws['img'], *config, ws['onnx'], '--out-file', out]
        outcome = call_tool('image_demo.py', *args, cwd=tmp_path)
        assert outcome.code == 0 and out.is_file(), outcome.stderr[-2000:]
        drawn.append(outcome.stdout.split(' drawn to ')[0])
    assert drawn[0] == drawn[1] and not drawn[0].startswith('0 detections'), drawn


def test_a_killed_runs_working_folder_is_removed_by_the_next_run(tmp_path):
    """What SIGKILL leaves (a working folder of a process that is gone) goes at the next run
    that writes the same output; a live process's folder stays."""
    import subprocess
    import sys

    from deploy.fileio import staging_path, temporary_folder

    gone = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = tmp_path / f'.q.onnx.{gone.stdout.strip()}.0badf00d.tmp'
    (dead / 'calibration').mkdir(parents=True)
    (dead / 'calibration' / 'ranges.json').write_text('{}')
    with temporary_folder(tmp_path / 'q.onnx') as live:
        assert live.is_dir() and not dead.exists()
        staging_path(tmp_path / 'q.onnx')  # another writer of the same output: live stays
        assert live.is_dir()
    assert list(tmp_path.iterdir()) == []
