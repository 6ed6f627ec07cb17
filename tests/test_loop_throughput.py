"""tools/test.py's inference loop: the faster pre- and post-processing give the same bits, the
post-processing thread keeps the data set's order, and the pure-inference pass times only the
backend."""

import random
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, _tool_module

from deploy.apis import test as test_job
from deploy.datasets.pipeline import TestPipeline, normalize, pad_to
from deploy.ops.mask_paste import _box_grid
from deploy.spec import PreprocessConfig

CONFIGS = [
    PreprocessConfig(scale=(416, 256), size_divisor=32),
    PreprocessConfig(
        mean=(103.53, 116.28, 123.675),
        std=(1.0, 1.0, 1.0),
        to_rgb=False,
        scale=(320, 200),
        size_divisor=32,
        pad_value=7.5,
    ),
]


@pytest.mark.parametrize('cfg', CONFIGS, ids=['rgb', 'bgr-padvalue'])
@pytest.mark.parametrize('fixed_shape', [None, (224, 352)])
def test_lookup_normalisation_is_bit_identical(cfg, fixed_shape):
    """The 256-level lookup gives exactly what normalise, pad and transpose give."""
    import cv2

    rng = np.random.default_rng(0)
    pipeline = TestPipeline(cfg, fixed_shape)
    for size in [(300, 200), (97, 411), (256, 416)]:
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        tensor, meta = pipeline(image)
        h, w = meta['img_shape']
        resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        if (w, h) == (size[1], size[0]):
            resized = image
        expected = normalize(resized, cfg.mean, cfg.std, cfg.to_rgb)
        expected = pad_to(expected, *meta['pad_shape'], cfg.pad_value).transpose(2, 0, 1)
        assert tensor.dtype == torch.float32 and tuple(tensor.shape) == expected.shape
        np.testing.assert_array_equal(tensor.numpy().view(np.uint32), expected.view(np.uint32))


def test_float_images_keep_the_float_path():
    cfg = PreprocessConfig(scale=(64, 48), size_divisor=32, to_float32=True)
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3)).astype(np.uint8)
    tensor, _ = TestPipeline(cfg)(image)
    expected = normalize(image.astype(np.float32), cfg.mean, cfg.std, cfg.to_rgb)
    np.testing.assert_array_equal(tensor.numpy(), pad_to(expected, 64, 64).transpose(2, 0, 1))


def test_paste_grid_equals_stacked_grid():
    boxes = torch.tensor([[3.2, 4.0, 30.5, 22.1], [0.0, 0.0, 0.0, 5.0]])
    xs, ys = torch.arange(2, 40, dtype=torch.float32), torch.arange(1, 27, dtype=torch.float32)
    grid = _box_grid(boxes, xs, ys)
    x1, y1, x2, y2 = boxes.unbind(-1)
    gx = ((xs[None] + 0.5) - x1[:, None]) / (x2 - x1)[:, None] * 2 - 1
    gy = ((ys[None] + 0.5) - y1[:, None]) / (y2 - y1)[:, None] * 2 - 1
    gx, gy = torch.nan_to_num(gx, 0.0, 0.0, 0.0), torch.nan_to_num(gy, 0.0, 0.0, 0.0)
    shape = (2, len(ys), len(xs))
    expected = torch.stack([gx[:, None].expand(shape), gy[:, :, None].expand(shape)], dim=3)
    assert torch.equal(grid, expected)


def _batches(ids):
    return [(torch.zeros(1, 3, 8, 8), [dict(img_id=i, img_shape=(8, 8))]) for i in ids]


def test_post_processing_thread_keeps_order():
    """Post-processing that finishes out of order still yields results in data set order."""
    ids = list(range(12))
    rng = random.Random(0)

    def batch_results(outputs, metas):
        time.sleep(rng.random() * 0.01)
        return [int(outputs['id'][0])]

    def runner(inputs):
        runner.calls += 1
        return dict(id=np.array([runner.calls - 1]), dets=np.zeros((1, 0, 5), np.float32))

    runner.calls = 0
    plan = SimpleNamespace(fixed_shape=None, decoded_images=False, precision=None)
    plan.spec = SimpleNamespace(precision=None)
    data = SimpleNamespace(batch_results=batch_results)
    options = test_job.TestOptions(progress=False)
    results, img_ids, seconds = test_job._infer(
        runner, plan, (_batches(ids), len(ids)), data, options, 'stub', print
    )
    assert results == ids and img_ids == ids and seconds > 0


def test_pure_inference_times_backend_calls_only():
    calls = []

    def runner(inputs):
        calls.append(inputs['input'].shape)
        time.sleep(0.002)

    ips = test_job.pure_inference_throughput(runner, _batches(range(5)), chunk=2)
    assert len(calls) == 6  # one warm-up call, then every batch once
    assert 0 < ips < 1 / 0.002
    run = test_job.TestRun([None] * 5, list(range(5)), loop_images_per_second=10.0)
    run.pure_images_per_second = ips
    line = test_job.loop_line(run, 2)
    assert line.startswith('inference loop: 10.0 img/s') and '(2 threads)' in line
    assert f'{10.0 / ips:.0%}' in line


def test_pure_inference_flag_needs_no_other_output():
    args = _tool_module('test.py').parse_args(
        [
            str(ROOT / 'configs/bundled/retinanet_r18_tiny_synthetic.py'),
            'm.onnx',
            '--pure-inference',
        ]
    )
    assert args.pure_inference and not args.eval
