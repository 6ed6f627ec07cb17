"""Shared fixtures: small models built from the shipped configs, exports shared by every test
that needs the same file, and the tools run in-process (as the command line runs them, without
paying a new interpreter per call)."""

import contextlib
import importlib.util
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from deploy.threads import passive_openmp_when_busy

#: the pytest-xdist worker this process is (``gw0``, ...), None in a one-process run
WORKER = os.environ.get('PYTEST_XDIST_WORKER')
if WORKER:
    # The suite runs one worker per core (``-n auto`` in pyproject.toml): one thread each, or
    # the workers' OpenMP pools fight over the same cores.
    os.environ.setdefault('OMP_NUM_THREADS', '1')

# Before torch is imported: a busy machine (other jobs beside the suite) would otherwise lose
# most of its time to spinning OpenMP threads.
passive_openmp_when_busy()

import torch  # noqa: E402
import torch.utils.data._utils.signal_handling as _loader_signals  # noqa: E402

# torch's DataLoader gives the process that iterates it with workers a Python SIGCHLD handler.
# Late in this long-lived process the main thread's alternate signal stack is too small for an
# AVX-512 signal frame, and the kernel turns the next child exit into SIGSEGV (SI_KERNEL, seen
# with strace on an AVX512-VNNI CPU). SIGCHLD keeps its default here: no frame is ever built.
_loader_signals._SIGCHLD_handler_set = True

from deploy.models.random_weights import make_detections_likely  # noqa: E402, F401 (re-exported)

ROOT = Path(__file__).resolve().parents[1]

# The tools the tests start in a subprocess import this checkout, whether the package is installed
# (the tools themselves import the installed package) or not, and wherever it is installed from.
os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get('PYTHONPATH'))))


def _tensorrt_checked(export_onnx):
    """``export_onnx`` that also holds every post-processed graph it writes to TensorRT's rules
    (checked on CPU, :mod:`deploy.backends.tensorrt.compat`)."""
    import functools

    import onnx

    from deploy.backends.tensorrt.compat import assert_tensorrt_compatible

    @functools.wraps(export_onnx)
    def export(detector, img, img_shape, output_file, *args, **kwargs):
        names = export_onnx(detector, img, img_shape, output_file, *args, **kwargs)
        if not kwargs.get('skip_postprocess'):
            assert_tensorrt_compatible(onnx.load(str(output_file)))
        return names

    return export


# Every graph exported in this process must also pass the CPU-side TensorRT compatibility check:
# set before any test module (or the export job) imports the exporter by name.
import deploy.export.onnx_export as _onnx_export  # noqa: E402

_onnx_export.export_onnx = _tensorrt_checked(_onnx_export.export_onnx)

RETINANET_CFG = ROOT / 'configs' / 'retinanet' / 'retinanet_r50_fpn_1x_coco.py'

#: shrink RetinaNet R50 to R18 with a narrow FPN/head: same code paths, a fraction of the time
SMALL_RETINANET = {
    'model.backbone.depth': 18,
    'model.neck.in_channels': [64, 128, 256, 512],
    'model.neck.out_channels': 64,
    'model.bbox_head.in_channels': 64,
    'model.bbox_head.feat_channels': 64,
}


# --------------------------------------------------------------------------------------------
# files made once per run and shared by every worker
# --------------------------------------------------------------------------------------------
#: environment variable naming the run's shared folder (set by the controlling process, seen by
#: the xdist workers it starts)
SHARED_DIR_ENV = 'DETDEPLOY_TESTS_SHARED_DIR'
_OWNED_SHARED_DIR = pytest.StashKey[str]()


def pytest_configure(config):
    if SHARED_DIR_ENV not in os.environ:
        os.environ[SHARED_DIR_ENV] = tempfile.mkdtemp(prefix='detdeploy_tests_')
        config.stash[_OWNED_SHARED_DIR] = os.environ[SHARED_DIR_ENV]
    if WORKER:
        torch.set_num_threads(1)


def pytest_unconfigure(config):
    owned = config.stash.get(_OWNED_SHARED_DIR, None)
    if owned:
        shutil.rmtree(owned, ignore_errors=True)


def shared_path(name: str) -> Path:
    """A path in the run's shared folder (the same for every worker)."""
    return Path(os.environ[SHARED_DIR_ENV]) / name


@contextlib.contextmanager
def made_once(path: Path):
    """Hold the lock of ``path`` (in the shared folder) while it is checked and made: the first
    worker makes it, the others wait and reuse it. The body must write ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f'{path}.lock'):
        yield


@pytest.fixture(scope='session')
def small_retinanet():
    from deploy.apis.model import init_detector

    torch.manual_seed(0)
    model, cfg = init_detector(str(RETINANET_CFG), cfg_options=dict(SMALL_RETINANET))
    make_detections_likely(model)
    return model, cfg


def random_batch(shapes, pad_to=None, seed=0):
    """A padded batch of random 'images' with their real (h, w) shapes and unit scale factors."""
    gen = torch.Generator().manual_seed(seed)
    h = pad_to[0] if pad_to else max(s[0] for s in shapes)
    w = pad_to[1] if pad_to else max(s[1] for s in shapes)
    h, w = -(-h // 32) * 32, -(-w // 32) * 32
    img = torch.zeros(len(shapes), 3, h, w)
    for i, (ih, iw) in enumerate(shapes):
        img[i, :, :ih, :iw] = torch.randn(3, ih, iw, generator=gen)
    metas = [dict(img_shape=(ih, iw), scale_factor=np.ones(4, np.float32)) for ih, iw in shapes]
    return img, metas


def write_pseudo_ground_truth(run, ann_file, out_file, per_image: int = 20) -> Path:
    """A COCO annotation file whose objects are the ``per_image`` best detections of each image
    of ``run`` (a ``TestRun``), on the images of ``ann_file``: an AP-parity test with teeth
    (:mod:`deploy.evaluation.pseudo_ground_truth`)."""
    from deploy.evaluation.coco_metric import results_to_coco_json
    from deploy.evaluation.pseudo_ground_truth import write_pseudo_ground_truth as write

    cat_ids = sorted(c['id'] for c in json.loads(Path(ann_file).read_text())['categories'])
    coco_results = results_to_coco_json(run.results, run.img_ids, cat_ids)
    return write(coco_results, ann_file, out_file, per_image=per_image)


@pytest.fixture(scope='session')
def small_retinanet_onnx(small_retinanet):
    """``get(exporter)``: the small RetinaNet exported once per session with dynamic batch, height
    and width (what every test that only needs "a dynamic RetinaNet graph" shares)."""
    from deploy.export.onnx_export import export_onnx

    model, _ = small_retinanet

    def get(exporter: str) -> Path:
        # The model is seeded, so every worker would export the same file: one does.
        path = shared_path('small_retinanet') / f'retinanet_{exporter}.onnx'
        with made_once(path):
            if not path.is_file():
                img, metas = random_batch([(160, 224), (128, 192)])
                img_shape = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
                export_onnx(model, img, img_shape, path, exporter=exporter, dynamic=True)
        return path

    return get


# --------------------------------------------------------------------------------------------
# the command-line tools, run in-process
# --------------------------------------------------------------------------------------------
_TOOLS: dict[str, object] = {}


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def _tool_module(name: str):
    """The module of ``tools/**/<name>`` (or ``demo/<name>``), imported once."""
    if name not in _TOOLS:
        [path] = [*(ROOT / 'tools').rglob(name), *(ROOT / 'demo').glob(name)]
        spec = importlib.util.spec_from_file_location(f'tool_{path.stem}', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _TOOLS[name] = module
    return _TOOLS[name]


def call_tool(tool: str, *args, cwd: Path) -> Outcome:
    """Run ``tool``'s ``main(args)`` the way its command line does (through ``run_cli``): exit
    code, stdout and stderr."""
    from deploy.apis.cli import run_cli

    module = _tool_module(tool)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        contextlib.chdir(cwd),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            run_cli(lambda: module.main([str(a) for a in args]))
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    return Outcome(code, out.getvalue(), err.getvalue())
