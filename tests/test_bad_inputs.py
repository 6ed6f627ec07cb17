"""The bad-input catalogue: every tool, fed what users really feed it.

Each case runs a tool's ``main()`` in-process (through the same ``run_cli`` wrapper as the
command line) and asserts the exit code, that stderr is exactly one ``error:`` line naming the
problem (never a traceback), and that no output, partial file or temporary is left behind.
The scenario tests at the end cover what a table cannot: interruptions, a full disk, a failed
verification, stale temporaries and file permissions.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import pytest
import torch
from conftest import ROOT, Outcome, call_tool
from onnx import TensorProto, helper

BUNDLED = ROOT / 'configs' / 'bundled'
RETINA_CFG = BUNDLED / 'retinanet_r18_tiny_synthetic.py'
RETINA_CKPT = ROOT / 'checkpoints' / 'retinanet_r18_tiny_synthetic.pth'
MASK_CFG = BUNDLED / 'mask_rcnn_r18_tiny_synthetic.py'
R50_CFG = ROOT / 'configs' / 'retinanet' / 'retinanet_r50_fpn_1x_coco.py'
FIXTURES = ROOT / 'tests' / 'data' / 'configs'


def call(tool: str, *args, cwd: Path) -> Outcome:
    return call_tool(tool, *args, cwd=cwd)


def assert_one_line_error(outcome: Outcome, *needles: str, code: int = 2) -> str:
    """Exit ``code``; the error is one ``error:`` line, the last on stderr (progress lines of
    the work done before may precede it), naming each of ``needles``; no traceback anywhere."""
    assert 'Traceback' not in outcome.stderr + outcome.stdout, outcome.stderr
    assert outcome.code == code, (outcome.code, outcome.stderr, outcome.stdout[-2000:])
    lines = [line for line in outcome.stderr.replace('\r', '\n').splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith('error: ')]
    assert len(errors) == 1 and lines[-1] == errors[0], outcome.stderr
    for needle in needles:
        assert needle in errors[0], f'{needle!r} not in {errors[0]!r}'
    return errors[0]


def leftovers(*folders: Path) -> list[Path]:
    """Temporary files (ours, or anything ``*.tmp``) under ``folders``."""
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [p for p in folder.rglob('*') if p.name.endswith('.tmp')]
    return found


# --------------------------------------------------------------------------------------------
# the workspace the cases draw on (built once)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    """A 4-image data set, the bundled RetinaNet with its checkpoint and a dynamic ONNX export,
    and a gallery of broken files."""
    from deploy.apis.export import export_model
    from deploy.datasets.synthetic import generate_synthetic_coco
    from deploy.models.checkpoint import load_checkpoint_file

    root = tmp_path_factory.mktemp('bad_inputs')
    paths = generate_synthetic_coco(root / 'data', num_train=0, num_val=4, seed=11)
    ann = paths['val']
    img_dir = root / 'data' / 'val2017'
    images = sorted(img_dir.glob('*.jpg'))
    cfg = root / 'retinanet.py'
    cfg.write_text(
        f'_base_ = {str(RETINA_CFG)!r}\n'
        f'data = dict(test=dict(ann_file={str(ann)!r}, img_prefix={str(img_dir)!r}))\n'
    )
    onnx_file = root / 'retinanet.onnx'
    export_model(
        str(cfg),
        str(RETINA_CKPT),
        onnx_file,
        input_img=images[0],
        dynamic=True,
        exporter='torchscript',
        logger=lambda *a: None,
    )
    raw_onnx = root / 'raw.onnx'
    export_model(
        str(cfg),
        str(RETINA_CKPT),
        raw_onnx,
        input_img=images[0],
        skip_postprocess=True,
        exporter='torchscript',
        logger=lambda *a: None,
    )
    w = dict(root=root, ann=ann, img_dir=img_dir, img=images[0], cfg=cfg, onnx=onnx_file)
    w['raw_onnx'] = raw_onnx
    w['ckpt'] = RETINA_CKPT

    bad = root / 'bad'
    bad.mkdir()
    (bad / 'a_folder').mkdir()
    (bad / 'empty.bin').write_bytes(b'')
    (bad / 'noise.bin').write_bytes(os.urandom(4096))
    (bad / 'text.jpg').write_text('not an image')
    (bad / 'truncated.jpg').write_bytes(w['img'].read_bytes()[:200])
    (bad / 'plain_file').write_text('I am a file, not a folder')
    # annotation files
    data = json.loads(ann.read_text())
    (bad / 'malformed.json').write_text('{"images": [')
    (bad / 'list.json').write_text('[1, 2, 3]')
    (bad / 'no_categories.json').write_text(json.dumps(dict(data, categories=None) | {}))
    without = {k: v for k, v in data.items() if k != 'categories'}
    (bad / 'no_categories.json').write_text(json.dumps(without))
    (bad / 'empty_categories.json').write_text(json.dumps(dict(data, categories=[])))
    no_ids = dict(data, images=[{k: v for k, v in i.items() if k != 'id'} for i in data['images']])
    (bad / 'image_without_id.json').write_text(json.dumps(no_ids))
    # The same data with the first two categories in the other order: names and objects agree,
    # only label order differs from the model's (what a re-exported data set looks like).
    swapped = [dict(c) for c in data['categories']]
    swapped[0]['name'], swapped[1]['name'] = swapped[1]['name'], swapped[0]['name']
    first, second = swapped[0]['id'], swapped[1]['id']
    swap_id = {first: second, second: first}
    objects = [
        dict(a, category_id=swap_id.get(a['category_id'], a['category_id']))
        for a in data['annotations']
    ]
    (bad / 'swapped.json').write_text(
        json.dumps(dict(data, categories=swapped, annotations=objects))
    )
    renamed = [dict(c, name=f'thing_{i}') for i, c in enumerate(data['categories'])]
    (bad / 'renamed.json').write_text(json.dumps(dict(data, categories=renamed)))
    (bad / 'fewer.json').write_text(json.dumps(dict(data, categories=data['categories'][:4])))
    missing_image = dict(data, images=[dict(data['images'][0], file_name='gone.jpg')])
    (bad / 'missing_image.json').write_text(json.dumps(missing_image))
    (bad / 'map_unknown.json').write_text(json.dumps({'circle': 'no such category'}))
    (bad / 'map_not_class.json').write_text(json.dumps({'hexagon': 'circle'}))
    (bad / 'map_list.json').write_text(json.dumps(['circle']))
    # checkpoints
    checkpoint = load_checkpoint_file(RETINA_CKPT)
    state = checkpoint['state_dict']
    headless = {k: v for k, v in state.items() if not k.startswith('bbox_head.')}
    torch.save(
        {'meta': {'CLASSES': checkpoint['class_names']}, 'state_dict': headless},
        bad / 'headless.pth',
    )
    torch.save(
        {'meta': {'CLASSES': ('a', 'b', 'c')}, 'state_dict': dict(state)}, bad / 'three_classes.pth'
    )
    reordered = list(checkpoint['class_names'])
    reordered[0], reordered[1] = reordered[1], reordered[0]
    torch.save(
        {'meta': {'CLASSES': tuple(reordered)}, 'state_dict': dict(state)},
        bad / 'reordered_classes.pth',
    )
    torch.save([1, 2, 3], bad / 'a_list.pth')
    torch.save({'state_dict': {'backbone.conv1.weight': 'not a tensor'}}, bad / 'strings.pth')
    marker = root / 'pwned'
    (bad / 'evil_reduce.pth').write_bytes(_evil_pickle(marker))
    (bad / 'evil_zip.pth').write_bytes(_evil_torch_zip(marker))
    w['marker'] = marker
    # ONNX files
    identity = helper.make_model(
        helper.make_graph(
            [helper.make_node('Identity', ['input'], ['dets'])],
            'foreign',
            [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 3, 8, 8])],
            [helper.make_tensor_value_info('dets', TensorProto.FLOAT, [1, 3, 8, 8])],
        )
    )
    onnx.save(identity, str(bad / 'foreign.onnx'))
    legacy = onnx.load(str(onnx_file))
    for prop in legacy.metadata_props:
        if prop.key == 'deploy':
            prop.value = json.dumps(dict(model_type='RetinaNet', nms={}, input_rules={}))
    onnx.save(legacy, str(bad / 'legacy.onnx'))
    shutil.copy(onnx_file, bad / 'copy.onnx')
    (bad / 'results.json').write_text('[]')
    (bad / 'regression.yml').write_text('models: [')
    (bad / 'regression_nokey.yml').write_text('models:\n  - name: x\n    config: y\n')
    w['bad'] = bad
    return w


def _evil_pickle(marker: Path) -> bytes:
    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    return pickle.dumps({'state_dict': {}, 'meta': Evil()})


def _evil_torch_zip(marker: Path) -> bytes:
    """A torch zip checkpoint whose data.pkl calls ``builtins.exec``."""

    class Evil:
        def __reduce__(self):
            return (exec, (f'open({str(marker)!r}, "w").write("x")',))

    buffer = io.BytesIO()
    torch.save({'state_dict': {}}, buffer)
    buffer.seek(0)
    original = zipfile.ZipFile(buffer)
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as target:
        for item in original.infolist():
            data = original.read(item)
            if item.filename.endswith('data.pkl'):
                data = pickle.dumps({'state_dict': {}, 'meta': Evil()}, protocol=2)
            target.writestr(item, data)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# the catalogue
# --------------------------------------------------------------------------------------------
@dataclass
class Case:
    """``tool`` run with ``args`` (strings; ``{name}`` is filled from the workspace) must fail
    with ``code`` and one line containing every ``needle``; ``absent`` paths must not exist."""

    tool: str
    args: tuple
    needles: tuple = ()
    absent: tuple = ()
    code: int = 2
    marks: list = field(default_factory=list)


def case(tool: str, *args, needles=(), absent=(), code: int = 2, marks=()) -> Case:
    return Case(tool, tuple(args), tuple(needles), tuple(absent), code, list(marks))


W = '{root}/w'  # a fresh output folder per case, under the workspace
EXP = ('pytorch2onnx.py', '{cfg}', '{ckpt}')
TST = ('test.py', '{cfg}', '{onnx}', '--backend', 'onnxruntime', '--eval', 'bbox')
TST_PT = ('test.py', '{cfg}', '{ckpt}', '--backend', 'pytorch', '--eval', 'bbox')
DEMO = ('image_demo.py', '{img}', '{cfg}', '{onnx}')
BENCH = ('benchmark.py', '{cfg}', '{onnx}', '--iters', '1', '--warmup', '0')
OUT = ('--output-file', W + '/m.onnx')

CASES: dict[str, Case] = {
    # ---- configs --------------------------------------------------------------------------
    'config missing': case(EXP[0], '{bad}/nope.py', '{ckpt}', needles=('nope.py', 'not found')),
    'config is a folder': case(EXP[0], '{bad}/a_folder', '{ckpt}', needles=('a_folder',)),
    'config syntax error': case(EXP[0], '{syntax_cfg}', '{ckpt}', needles=('syntax error', 'line')),
    'config base missing': case(
        EXP[0], str(FIXTURES / 'missing_base.py'), '{ckpt}', needles=('not found', '_base_')
    ),
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
    'unknown model type': case(
        *EXP,
        '--cfg-options',
        'model.neck.type=NoSuchNeck',
        *OUT,
        needles=('`NoSuchNeck`', 'registry'),
        absent=(W + '/m.onnx',),
    ),
    'cfg-options without =': case(
        *EXP, '--cfg-options', 'model.test_cfg.score_thr', needles=('key=value', 'score_thr')
    ),
    'cfg-options empty key': case(*EXP, '--cfg-options', '=3', needles=('key=value',)),
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
    'flip TTA at export': case(
        *EXP,
        '--cfg-options',
        'data.test.pipeline.1.flip=True',
        *OUT,
        needles=('flip test-time augmentation',),
        absent=(W + '/m.onnx',),
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
    'checkpoint missing': case(
        EXP[0],
        '{cfg}',
        '{bad}/missing.pth',
        *OUT,
        needles=('missing.pth', 'not found'),
        absent=(W + '/m.onnx',),
    ),
    'checkpoint is a folder': case(EXP[0], '{cfg}', '{bad}/a_folder', *OUT, needles=('a_folder',)),
    'checkpoint empty': case(
        EXP[0], '{cfg}', '{bad}/empty.bin', *OUT, needles=('empty.bin',), absent=(W + '/m.onnx',)
    ),
    'checkpoint noise': case(
        EXP[0], '{cfg}', '{bad}/noise.bin', *OUT, needles=('noise.bin',), absent=(W + '/m.onnx',)
    ),
    'checkpoint not a dict': case(
        EXP[0], '{cfg}', '{bad}/a_list.pth', *OUT, needles=('a_list.pth',)
    ),
    'checkpoint non-tensor values': case(
        EXP[0], '{cfg}', '{bad}/strings.pth', *OUT, needles=('strings.pth',)
    ),
    'malicious pickle (os.system)': case(
        EXP[0], '{cfg}', '{bad}/evil_reduce.pth', *OUT, needles=('evil_reduce.pth',)
    ),
    'malicious torch zip (exec)': case(
        EXP[0], '{cfg}', '{bad}/evil_zip.pth', *OUT, needles=('evil_zip.pth',)
    ),
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
    'malicious pickle in demo': case(
        'image_demo.py', '{img}', '{cfg}', '{bad}/evil_zip.pth', needles=('evil_zip.pth',)
    ),
    'headless checkpoint (export)': case(
        EXP[0],
        '{cfg}',
        '{bad}/headless.pth',
        *OUT,
        needles=('bbox_head', 'missing'),
        absent=(W + '/m.onnx',),
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
    'wrong-size checkpoint': case(
        EXP[0],
        str(R50_CFG),
        '{ckpt}',
        *OUT,
        needles=('does not match', 'backbone'),
        absent=(W + '/m.onnx',),
    ),
    'class list of another length': case(
        EXP[0],
        '{cfg}',
        '{bad}/three_classes.pth',
        *OUT,
        needles=('3 classes', 'predicts 6'),
        absent=(W + '/m.onnx',),
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
    'input image missing': case(
        *EXP, '--input-img', '{bad}/nope.jpg', *OUT, needles=('nope.jpg',), absent=(W + '/m.onnx',)
    ),
    'input image undecodable': case(
        *EXP,
        '--input-img',
        '{bad}/text.jpg',
        *OUT,
        needles=('text.jpg', 'decode'),
        absent=(W + '/m.onnx',),
    ),
    'input image empty': case(*EXP, '--input-img', '{bad}/empty.bin', *OUT, needles=('empty.bin',)),
    'input image is a folder': case(
        *EXP, '--input-img', '{bad}/a_folder', *OUT, needles=('a_folder',)
    ),
    'input image truncated': case(
        *EXP,
        '--input-img',
        '{bad}/truncated.jpg',
        *OUT,
        needles=('truncated.jpg',),
        absent=(W + '/m.onnx',),
    ),
    'test image missing': case(
        *EXP,
        '--verify',
        '--test-img',
        '{bad}/nope.jpg',
        *OUT,
        needles=('nope.jpg',),
        absent=(W + '/m.onnx',),
    ),
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
    'benchmark image missing': case(*BENCH, '--image', '{bad}/nope.jpg', needles=('nope.jpg',)),
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
    # ---- outputs --------------------------------------------------------------------------
    'export output is a folder': case(
        *EXP, '--output-file', '{bad}/a_folder', needles=('a_folder', 'directory')
    ),
    'export output under a file': case(
        *EXP, '--output-file', '{bad}/plain_file/m.onnx', needles=('plain_file', 'not a directory')
    ),
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
    'demo out-file is a folder': case(*DEMO, '--out-file', '{bad}/a_folder', needles=('a_folder',)),
    'demo out-file not an image': case(
        *DEMO, '--out-file', W + '/r.xyz', needles=('.xyz', 'image format'), absent=(W + '/r.xyz',)
    ),
    'benchmark json is a folder': case(*BENCH, '--json', '{bad}/a_folder', needles=('a_folder',)),
    'benchmark plot under a file': case(
        *BENCH, '--plot', '{bad}/plain_file/p.png', needles=('plain_file',)
    ),
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
    'export device cuda without GPU': case(
        *EXP, '--device', 'cuda:0', *OUT, needles=('cuda:0', 'GPU'), absent=(W + '/m.onnx',)
    ),
    'demo device cuda without GPU': case(*DEMO, '--device', 'cuda', needles=('GPU',)),
    'benchmark device cuda without GPU': case(*BENCH, '--device', 'cuda', needles=('GPU',)),
    'shape with three numbers': case(
        *EXP,
        '--shape',
        '320',
        '320',
        '3',
        *OUT,
        needles=('--shape', '3 numbers'),
        absent=(W + '/m.onnx',),
    ),
    'shape zero': case(*EXP, '--shape', '0', *OUT, needles=('--shape',)),
    'opset 9': case(
        *EXP,
        '--opset-version',
        '9',
        *OUT,
        needles=('--opset-version 9', '16'),
        absent=(W + '/m.onnx',),
    ),
    'opset from the future': case(*EXP, '--opset-version', '99', *OUT, needles=('99',)),
    'unknown exporter': case(*EXP, '--exporter', 'tf2onnx', needles=('tf2onnx',)),
    'verify with skip-postprocess': case(
        *EXP,
        '--verify',
        '--skip-postprocess',
        *OUT,
        needles=('--skip-postprocess',),
        absent=(W + '/m.onnx',),
    ),
    'export without checkpoint': case(EXP[0], '{cfg}', *OUT, needles=('no checkpoint',)),
    'checkpoint given twice': case(
        *EXP, '--checkpoint', '{bad}/other.pth', needles=('checkpoint once',)
    ),
    'benchmark iters 0': case(
        'benchmark.py', '{cfg}', '{onnx}', '--iters', '0', needles=('--iters',)
    ),
    'benchmark warmup -1': case(*BENCH, '--warmup', '-1', needles=('--warmup',)),
    'benchmark batch 0': case(*BENCH, '--batch-size', '0', needles=('--batch-size',)),
    'benchmark shape 3 numbers': case(*BENCH, '--shape', '1', '2', '3', needles=('--shape',)),
    'benchmark model missing': case(
        'benchmark.py', '{cfg}', '{bad}/nope.onnx', needles=('nope.onnx',)
    ),
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


def _fill(value: str, ws: dict, folder: Path) -> str:
    return value.format(**{k: str(v) for k, v in ws.items()}).replace(
        str(ws['root']) + '/w', str(folder)
    )


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input(name, ws, tmp_path):
    case = CASES[name]
    if 'syntax_cfg' not in ws:
        syntax = ws['root'] / 'syntax.py'
        syntax.write_text('model = dict(\n    type="RetinaNet",,\n)\n')
        ws['syntax_cfg'] = syntax
    folder = tmp_path / 'w'
    folder.mkdir()
    if 'mkdir' in case.marks:
        (ws['bad'] / 'a_folder.pkl').mkdir(exist_ok=True)
    args = [_fill(a, ws, folder) for a in case.args]
    outcome = call(case.tool, *args, cwd=tmp_path)
    assert_one_line_error(outcome, *(_fill(n, ws, folder) for n in case.needles), code=case.code)
    for path in case.absent:
        assert not Path(_fill(path, ws, folder)).exists(), path
    assert leftovers(tmp_path, ws['root']) == []
    assert not ws['marker'].exists(), 'a checkpoint ran code'


# --------------------------------------------------------------------------------------------
# scenarios a table cannot express
# --------------------------------------------------------------------------------------------
def _export_args(ws, out: Path, *extra) -> list:
    return [ws['cfg'], ws['ckpt'], '--exporter', 'torchscript', '--output-file', out, *extra]


@pytest.mark.parametrize(
    'flag, needle',
    [
        (('--opset-version', '9'), '--opset-version 9'),
        (('--output-file', '{bad}/a_folder'), 'directory'),
        (('--shape', '1', '2', '3'), '--shape'),
        (('--device', 'cuda'), 'GPU'),
        (('--input-img', '{bad}/nope.jpg'), 'nope.jpg'),
    ],
)
def test_cheap_checks_come_before_the_model_is_built(ws, tmp_path, monkeypatch, flag, needle):
    """These used to be reported after 28-72 s of model building and export."""
    import deploy.apis.export as export_api

    def too_late(*args, **kwargs):
        raise AssertionError('the model was built before the arguments were checked')

    monkeypatch.setattr(export_api, 'init_detector', too_late)
    args = [a.format(bad=ws['bad']) for a in flag]
    outcome = call('pytorch2onnx.py', ws['cfg'], ws['ckpt'], *args, cwd=tmp_path)
    assert_one_line_error(outcome, needle)


def test_interrupted_export_leaves_nothing(ws, tmp_path, monkeypatch):
    import deploy.apis.export as export_api

    out = tmp_path / 'm.onnx'

    def interrupted(model, img, img_shape, path, **kwargs):
        Path(path).write_bytes(b'half an onnx file')
        raise KeyboardInterrupt

    monkeypatch.setattr(export_api, 'export_onnx', interrupted)
    outcome = call('pytorch2onnx.py', *_export_args(ws, out), cwd=tmp_path)
    assert outcome.code == 130 and outcome.stderr.strip().splitlines()[-1] == 'interrupted'
    assert not out.exists() and leftovers(tmp_path) == []


def test_failed_verify_keeps_the_old_file(ws, tmp_path, monkeypatch):
    from deploy.export.verify import VerifyRow
    from deploy.tasks.detection import DetectionTask

    out = tmp_path / 'm.onnx'
    out.write_bytes(b'the previous, good export')
    monkeypatch.setattr(
        DetectionTask,
        'verify_export',
        lambda *a, **k: [VerifyRow('input-img', (1, 3, 8, 8), 1.0, False)],
    )
    outcome = call('pytorch2onnx.py', *_export_args(ws, out, '--verify'), cwd=tmp_path)
    assert outcome.code == 1 and 'verification FAILED' in outcome.stderr
    assert out.read_bytes() == b'the previous, good export'
    kept = tmp_path / 'm.failed-verify.onnx'
    assert kept.is_file() and onnx.load(str(kept)).graph.node
    assert f'kept as {kept}' in outcome.stdout
    assert leftovers(tmp_path) == []


def test_stale_temporaries_are_cleaned_and_live_ones_kept(ws, tmp_path):
    out = tmp_path / 'm.onnx'
    dead = tmp_path / '.m.onnx.999999999.deadbeef.tmp'  # no such process
    alive = tmp_path / f'.m.onnx.{os.getppid()}.0badf00d.tmp'  # a running writer's
    other = tmp_path / '.other.onnx.999999999.deadbeef.tmp'  # another output's
    for path in (dead, alive, other):
        path.write_bytes(b'x')
    outcome = call('pytorch2onnx.py', *_export_args(ws, out), cwd=tmp_path)
    assert outcome.code == 0, outcome.stderr
    assert out.is_file() and not dead.exists() and alive.exists() and other.exists()


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_honour_the_umask(ws, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        out, pkl = tmp_path / 'm.onnx', tmp_path / 'r.pkl'
        assert call('pytorch2onnx.py', *_export_args(ws, out), cwd=tmp_path).code == 0
        outcome = call(
            'test.py',
            ws['cfg'],
            out,
            '--backend',
            'onnxruntime',
            '--out',
            pkl,
            '--workers',
            '0',
            cwd=tmp_path,
        )
        assert outcome.code == 0, outcome.stderr
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == mode and pkl.stat().st_mode & 0o777 == mode


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


def test_scoped_type_names_load(tmp_path):
    """3.x configs write ``type='mmdet.RetinaNet'``: the same model."""
    from deploy.apis.model import init_detector

    plain, _ = init_detector(str(RETINA_CFG), str(RETINA_CKPT), logger=None)
    scoped, _ = init_detector(
        str(RETINA_CFG),
        str(RETINA_CKPT),
        cfg_options={'model.type': 'mmdet.RetinaNet'},
        logger=None,
    )
    assert type(scoped) is type(plain) and scoped.spec == plain.spec


def test_no_traceback_anywhere_in_the_catalogue():
    """The catalogue is big enough to mean something."""
    assert len(CASES) >= 100
    tools = {c.tool for c in CASES.values()}
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
