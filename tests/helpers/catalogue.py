"""The bad-input catalogue's runner: the workspace its cases draw on, the ``Case`` record, the
argument prefixes and the check every case makes. The cases themselves, one module per job, are
``tests/test_bad_inputs_*.py``.

Each case runs a tool's ``main()`` in-process (through the same ``run_cli`` wrapper as the
command line) and asserts the exit code, that stderr is exactly one ``error:`` line naming the
problem (never a traceback), and that no output, partial file or temporary is left behind.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
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
#: the workspace of this process (one per process, shared by the catalogue's modules)
_WORKSPACE: dict = {}


def workspace(tmp_path_factory) -> dict:
    """A 4-image data set, the bundled RetinaNet with its checkpoint and a dynamic ONNX export,
    and a gallery of broken files (built once per process, by whichever module asks first)."""
    if not _WORKSPACE:
        _WORKSPACE.update(_build_workspace(tmp_path_factory))
    return _WORKSPACE


def _build_workspace(tmp_path_factory) -> dict:
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


def fill(value: str, ws: dict, folder: Path) -> str:
    """``value`` with ``{name}`` filled from the workspace, the per-case output folder for ``W``."""
    return value.format(**{k: str(v) for k, v in ws.items()}).replace(
        str(ws['root']) + '/w', str(folder)
    )


def run_case(case: Case, ws: dict, tmp_path: Path) -> None:
    """Run ``case`` in ``tmp_path``: one error line naming every needle, no output of those it
    names as ``absent``, no temporary left, no code run by a checkpoint."""
    if 'syntax_cfg' not in ws:
        syntax = ws['root'] / 'syntax.py'
        syntax.write_text('model = dict(\n    type="RetinaNet",,\n)\n')
        ws['syntax_cfg'] = syntax
    folder = tmp_path / 'w'
    folder.mkdir()
    if 'mkdir' in case.marks:
        (ws['bad'] / 'a_folder.pkl').mkdir(exist_ok=True)
    args = [fill(a, ws, folder) for a in case.args]
    outcome = call(case.tool, *args, cwd=tmp_path)
    assert_one_line_error(outcome, *(fill(n, ws, folder) for n in case.needles), code=case.code)
    for path in case.absent:
        assert not Path(fill(path, ws, folder)).exists(), path
    assert leftovers(tmp_path, ws['root']) == []
    assert not ws['marker'].exists(), 'a checkpoint ran code'


def catalogue_cases(modules) -> dict[str, str]:
    """``{case name: tool}`` of the ``CASES`` tables of the catalogue's ``modules`` (files), read
    from their source: a test module never imports another."""
    prefixes = {'EXP': EXP, 'TST': TST, 'TST_PT': TST_PT, 'DEMO': DEMO, 'BENCH': BENCH}
    found = {}
    for module in modules:
        tree = ast.parse(Path(module).read_text())
        [table] = [
            node.value
            for node in tree.body
            if isinstance(node, ast.AnnAssign) and getattr(node.target, 'id', '') == 'CASES'
        ]
        for key, value in zip(table.keys, table.values):
            first = value.args[0]
            if isinstance(first, ast.Constant):
                tool = first.value
            else:  # *EXP or EXP[0]
                tool = prefixes[first.value.id][0]
            found[f'{Path(module).stem}::{key.value}'] = tool
    return found
