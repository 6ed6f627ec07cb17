"""The Python API (deploy.Detector): its docstring example, one backend session across calls,
the same detections as tools/test.py, and one-line refusals."""

import contextlib
import doctest

import helpers.bundled_exports as bundled
import numpy as np
import pytest
from conftest import ROOT

from deploy.errors import ConfigError


def test_the_docstring_example_runs():
    import deploy.api

    with contextlib.chdir(ROOT):
        outcome = doctest.testmod(deploy.api, optionflags=doctest.ELLIPSIS)
    assert outcome.attempted >= 8 and outcome.failed == 0


def test_one_backend_session_serves_every_call(monkeypatch):
    from deploy.api import Detector
    from deploy.backends.onnxruntime import OnnxRuntimeBackend

    loads = []
    original = OnnxRuntimeBackend.__init__

    def counted(self, *args, **kwargs):
        loads.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(OnnxRuntimeBackend, '__init__', counted)
    detector = Detector(bundled.fp32_export('retinanet'), logger=None)
    first = detector(bundled.IMAGE)
    again = detector(bundled.IMAGE)
    batch = detector([bundled.IMAGE, np.ascontiguousarray(detector.draw(bundled.IMAGE, first))])
    assert len(loads) == 1
    assert len(first) > 0 and len(batch) == 2
    np.testing.assert_array_equal(first.boxes, again.boxes)
    np.testing.assert_array_equal(first.boxes, batch[0].boxes)


def test_the_same_detections_as_the_test_tool():
    """tools/test.py's job on the first val images, then the API on the same files."""
    from deploy.api import Detector
    from deploy.apis.quantize import calibration_images
    from deploy.apis.test import run_test
    from deploy.config import load_config

    options = bundled.data_options()
    onnx_file = bundled.fp32_export('retinanet')
    run = run_test(
        bundled.CONFIGS['retinanet'],
        onnx_file,
        'onnxruntime',
        num_images=4,
        cfg_options=options,
        num_workers=0,
        progress=False,
        **bundled.QUIET,
    )
    files, _ = calibration_images(load_config(bundled.CONFIGS['retinanet'], options), 'test')
    detector = Detector(onnx_file, bundled.CONFIGS['retinanet'], cfg_options=options, logger=None)
    found = detector(files[:4])
    assert sum(len(r) for r in run.results) > 0, 'the reference detected nothing'
    for reference, ours in zip(run.results, found, strict=True):
        np.testing.assert_array_equal(ours.boxes, reference.boxes)
        np.testing.assert_array_equal(ours.scores, reference.scores)
        np.testing.assert_array_equal(ours.labels, reference.labels)
    assert found[0].class_names == tuple(run.class_names)


def test_masks_come_as_bitmaps_at_the_image_size():
    from deploy.api import Detector

    detector = Detector(bundled.CHECKPOINTS['mask_rcnn'], bundled.CONFIGS['mask_rcnn'], logger=None)
    found = detector(bundled.IMAGE).above(0.3)
    image = detector.draw(bundled.IMAGE, found)
    assert len(found) > 0 and found.masks.dtype == bool
    assert found.masks.shape == (len(found), *image.shape[:2])
    assert set(found.names) <= set(detector.class_names)


@pytest.mark.parametrize(
    ('model', 'config', 'message'),
    [
        ('checkpoints/retinanet_r18_tiny_synthetic.pth', None, 'give its config'),
        ('demo/demo.jpg', None, 'cannot tell the backend'),
        ('missing.onnx', None, 'model file not found'),
    ],
)
def test_bad_models_are_one_line(model, config, message):
    from deploy.api import Detector

    with contextlib.chdir(ROOT), pytest.raises(ConfigError, match=message):
        Detector(model, config)


def test_the_readme_example_runs(tmp_path):
    """The "Use it from Python" block, run as written in a folder laid out like the repository."""
    import io
    import re

    readme = (ROOT / 'README.md').read_text()
    section = readme.split('## Use it from Python', 1)[1].split('\n## ', 1)[0]
    [code] = re.findall(r'```python\n(.*?)```', section, re.S)
    for name in ('configs', 'checkpoints', 'demo'):
        (tmp_path / name).symlink_to(ROOT / name)
    out = io.StringIO()
    with contextlib.chdir(tmp_path), contextlib.redirect_stdout(out):
        exec(compile(code, 'README.md', 'exec'), {})
    assert (tmp_path / 'result.jpg').is_file()
    assert re.search(r'^\w+ 0\.\d+ \[', out.getvalue(), re.M), out.getvalue()
