"""DETR batch inference: an image padded inside a batch against the same image alone.

What is exact by design in MMDetection's semantics is everything after the backbone: the padding
mask from each image's real ``img_shape`` (attention key padding and positional encoding) and
boxes relative to the real image. A backbone whose windows never see the padding
(``PatchBackbone``) makes the whole model batch-invariant, so there batch 2 must equal batch 1
exactly, in PyTorch and in ONNX Runtime, and AP with ``tools/test.py --batch-size 2`` must equal
``--batch-size 1``. With ``test_cfg.batch_invariant=True`` the same must hold for ResNet.

ResNet's overlapping windows do see the padding in MMDetection's semantics (the default): for it
the tests pin that ONNX Runtime reproduces PyTorch at each batch size, and measure the effect.
"""

import copy
import json

import numpy as np
import pytest
import torch
from conftest import random_batch, write_pseudo_ground_truth
from helpers.small_detr import (
    BATCH_INVARIANT,
    DETR_CFG,
    PATCH_DETR,
    SMALL_DETR,
    batch_inputs,
    build_small,
)

from deploy.apis.test import run_test
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.datasets.pipeline import rescale_size
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.errors import ConfigError
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.models.checkpoint import save_checkpoint
from deploy.postprocess import outputs_to_results

#: real (h, w) of a batch: neither a multiple of 32, padded to 160 x 160 together
SHAPES = [(90, 150), (150, 120)]
#: small test scale of the generated set (the config's is 1333 x 800)
TEST_SCALE = (320, 256)


#: the batch-invariant models: (cfg options, pipeline size divisor)
INVARIANT = {
    'patch backbone': (PATCH_DETR, 32),
    'batch_invariant resnet': (BATCH_INVARIANT, 1),
}


def _export(model, path) -> None:
    img, metas = random_batch(SHAPES)
    shapes = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
    export_onnx(model, img, shapes, path, exporter='torchscript', dynamic=True)


@pytest.fixture(scope='module', params=list(INVARIANT))
def invariant_detr(request, tmp_path_factory):
    """A small batch-invariant DETR, its dynamic ONNX export, its options and size divisor."""
    options, size_divisor = INVARIANT[request.param]
    model = build_small(**options)
    path = tmp_path_factory.mktemp('detr_batch') / 'detr.onnx'
    _export(model, path)
    return model, path, options, size_divisor


def _alone(img, metas, i, size_divisor):
    """Image ``i`` of a batch as a batch of its own, padded only to ``size_divisor``."""
    h, w = metas[i]['img_shape']
    pad_h, pad_w = (-(-n // size_divisor) * size_divisor for n in (h, w))
    return img[i : i + 1, :, :pad_h, :pad_w].contiguous(), metas[i : i + 1]


@pytest.mark.parametrize('backend_name', ['pytorch', 'onnxruntime'])
def test_image_in_a_padded_batch_equals_the_image_alone(invariant_detr, backend_name):
    model, onnx_file, _, size_divisor = invariant_detr
    reference = PyTorchBackend(model)
    if backend_name == 'pytorch':  # a copy: batch invariance survives copying the model
        backend = PyTorchBackend(copy.deepcopy(model))
    else:
        backend = OnnxRuntimeBackend(onnx_file)
    img, metas = random_batch(SHAPES)
    batched = outputs_to_results(backend(batch_inputs(img, metas)), metas)
    alone = []
    for i in range(len(SHAPES)):
        one_img, one_meta = _alone(img, metas, i, size_divisor)
        alone += outputs_to_results(reference(batch_inputs(one_img, one_meta)), one_meta)
    assert all(len(r) == 10 for r in alone)
    stats = match_result_lists(alone, batched)
    assert stats.matched_fraction == 1.0 and stats.exact_fraction == 1.0, stats
    assert stats.max_score_err < 1e-5 and stats.max_box_err < 1e-3, stats

    # The control: with the padded size as every image's shape (no padding mask, boxes relative
    # to the padded batch, MMDetection 2.x's ONNX batch mode) the smaller image comes out wrong.
    padded = batch_inputs(img, metas)
    padded['img_shape'][:] = img.shape[-2:]
    wrong = outputs_to_results(backend(padded), metas)
    assert match_result_lists(alone[:1], wrong[:1]).exact_fraction < 0.5


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('detr_eval')
    paths = generate_synthetic_coco(root / 'data', num_train=0, num_val=4, seed=11)
    images = sorted(json.loads(paths['val'].read_text())['images'], key=lambda i: i['id'])
    sizes = [rescale_size(i['width'], i['height'], TEST_SCALE)[0] for i in images]
    assert sizes[0] != sizes[1] and sizes[2] != sizes[3], 'batches of 2 must pad'
    return paths


def _ap_runs(model, options, onnx_file, val_set, tmp_path) -> dict:
    """bbox mAP of PyTorch and ONNX Runtime at batch sizes 1 and 2 (``tools/test.py``'s job),
    against the PyTorch batch-1 run's own detections."""
    options = {
        **options,
        'data.test.ann_file': str(val_set['val']),
        'data.test.img_prefix': str(val_set['val_img_prefix']),
        'data.test.pipeline.1.img_scale': TEST_SCALE,
    }
    classes = tuple(c['name'] for c in CATEGORIES)
    ckpt = save_checkpoint(model, tmp_path / 'detr.pth', meta={'CLASSES': classes})
    kwargs = dict(num_workers=0, progress=False, logger=lambda *a: None)
    first = run_test(DETR_CFG, ckpt, 'pytorch', cfg_options=options, **kwargs)
    pseudo = write_pseudo_ground_truth(first, val_set['val'], tmp_path / 'pseudo.json')
    options['data.test.ann_file'] = str(pseudo)
    aps = {}
    for backend, model_file in (('pytorch', ckpt), ('onnxruntime', onnx_file)):
        for batch_size in (1, 2):
            run = run_test(
                DETR_CFG,
                model_file,
                backend,
                cfg_options=options,
                metrics=('bbox',),
                batch_size=batch_size,
                **kwargs,
            )
            aps[backend, batch_size] = run.metrics['bbox_mAP']
    return aps


@pytest.mark.parametrize(
    'invariant_detr',
    # the patch backbone's direct comparison above is enough by default
    [pytest.param('patch backbone', marks=pytest.mark.slow), 'batch_invariant resnet'],
    indirect=True,
)
def test_batch_size_2_gives_the_ap_of_batch_size_1(invariant_detr, val_set, tmp_path):
    model, onnx_file, options, _ = invariant_detr
    aps = _ap_runs(model, {**SMALL_DETR, **options}, onnx_file, val_set, tmp_path)
    assert aps['pytorch', 1] > 0.9, aps  # the reference against its own detections
    for key, ap in aps.items():
        assert abs(ap - aps['pytorch', 1]) <= 0.001, (key, aps)


@pytest.fixture(scope='module')
def resnet_detr_onnx(tmp_path_factory):
    model = build_small()
    path = tmp_path_factory.mktemp('detr_resnet') / 'detr.onnx'
    _export(model, path)
    return model, path


def test_batch_invariance_changes_nothing_at_batch_1():
    """Without padding there is nothing to hide: batch_invariant gives MMDetection's results."""
    img, metas = random_batch([(150, 230)])
    img = img[..., :150, :230].contiguous()  # size_divisor=1: no padding at all
    backbone = {k: v for k, v in BATCH_INVARIANT.items() if 'batch_invariant' not in k}
    default = PyTorchBackend(build_small(**backbone))(batch_inputs(img, metas))
    invariant = PyTorchBackend(build_small(**BATCH_INVARIANT))(batch_inputs(img, metas))
    np.testing.assert_array_equal(invariant['labels'], default['labels'])
    np.testing.assert_allclose(invariant['dets'], default['dets'], rtol=0, atol=1e-5)


def test_batch_invariance_refuses_average_pooling():
    with pytest.raises(ConfigError, match='average pooling'):
        build_small(**BATCH_INVARIANT, **{'model.backbone.avg_down': True})


def test_onnxruntime_ap_equals_pytorch_at_each_batch_size(resnet_detr_onnx, val_set, tmp_path):
    """MMDetection's semantics with ResNet: ONNX Runtime adds no gap to PyTorch's, at batch 1
    and at batch 2 (where padding reaches the backbone)."""
    model, onnx_file = resnet_detr_onnx
    aps = _ap_runs(model, SMALL_DETR, onnx_file, val_set, tmp_path)
    print('bbox mAP against the PyTorch batch-1 detections:', aps)
    assert aps['pytorch', 1] > 0.9, aps
    for batch_size in (1, 2):
        assert abs(aps['onnxruntime', batch_size] - aps['pytorch', batch_size]) <= 0.001, aps
