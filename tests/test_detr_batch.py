"""DETR batch inference: an image padded inside a batch against the same image alone.

What is exact by design is everything after the backbone: the padding mask from each image's
real ``img_shape`` (attention key padding and positional encoding) and boxes relative to the real
image. A backbone whose windows never see the padding (``PatchBackbone``) makes the whole model
batch-invariant, so there batch 2 must equal batch 1 exactly, in PyTorch and in ONNX Runtime, and
AP with ``tools/test.py --batch-size 2`` must equal ``--batch-size 1``.

ResNet's overlapping windows do see the padding (MMDetection's semantics too): for it the tests
pin that ONNX Runtime reproduces PyTorch at each batch size, and measure the batch effect.
"""

import pytest
import torch
from conftest import random_batch, write_pseudo_ground_truth
from test_detr import DETR_CFG, PATCH_DETR, SMALL_DETR, batch_inputs, build_small

from deploy.apis.test import run_test
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.backends.pytorch import PyTorchBackend
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.evaluation.parity import match_result_lists
from deploy.export.onnx_export import export_onnx
from deploy.models.checkpoint import save_checkpoint
from deploy.postprocess import outputs_to_results

#: real (h, w) of a batch: neither a multiple of 32, padded to 160 x 160 together
SHAPES = [(90, 150), (150, 120)]
#: small test scale of the generated set (the config's is 1333 x 800)
TEST_SCALE = (320, 256)


def _ceil32(n: int) -> int:
    return -(-n // 32) * 32


@pytest.fixture(scope='module')
def patch_detr(tmp_path_factory):
    """The small DETR on ``PatchBackbone``, and its dynamic ONNX export."""
    model = build_small(**PATCH_DETR)
    img, metas = random_batch(SHAPES)
    path = tmp_path_factory.mktemp('detr_batch') / 'patch_detr.onnx'
    export_onnx(
        model,
        img,
        torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32),
        path,
        exporter='torchscript',
        dynamic=True,
    )
    return model, path


def _alone(img, metas, i):
    """Image ``i`` of a batch as a batch of its own (padded to multiples of 32 only)."""
    h, w = metas[i]['img_shape']
    return img[i : i + 1, :, : _ceil32(h), : _ceil32(w)].contiguous(), metas[i : i + 1]


@pytest.mark.parametrize('backend_name', ['pytorch', 'onnxruntime'])
def test_image_in_a_padded_batch_equals_the_image_alone(patch_detr, backend_name):
    model, onnx_file = patch_detr
    reference = PyTorchBackend(model)
    backend = reference if backend_name == 'pytorch' else OnnxRuntimeBackend(onnx_file)
    img, metas = random_batch(SHAPES)
    batched = outputs_to_results(backend(batch_inputs(img, metas)), metas)
    alone = []
    for i in range(len(SHAPES)):
        one_img, one_meta = _alone(img, metas, i)
        alone += outputs_to_results(reference(batch_inputs(one_img, one_meta)), one_meta)
    assert all(len(r) == 10 for r in alone)
    stats = match_result_lists(alone, batched)
    assert stats.matched_fraction == 1.0 and stats.exact_fraction == 1.0, stats
    assert stats.max_score_err < 1e-5 and stats.max_box_err < 1e-3, stats

    # The control: with the padded size as every image's shape (no padding mask, boxes relative
    # to the padded batch, MMDetection 2.x's ONNX batch mode) the smaller image comes out wrong.
    padded = dict(batch_inputs(img, metas), img_shape=batch_inputs(img, metas)['img_shape'] * 0)
    padded['img_shape'][:] = img.shape[-2:]
    wrong = outputs_to_results(backend(padded), metas)
    assert match_result_lists(alone[:1], wrong[:1]).exact_fraction < 0.5


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('detr_eval')
    return generate_synthetic_coco(root / 'data', num_train=0, num_val=6, seed=11)


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


def test_batch_size_2_gives_the_ap_of_batch_size_1(patch_detr, val_set, tmp_path):
    model, onnx_file = patch_detr
    aps = _ap_runs(model, {**SMALL_DETR, **PATCH_DETR}, onnx_file, val_set, tmp_path)
    assert aps['pytorch', 1] > 0.9, aps  # the reference against its own detections
    for key, ap in aps.items():
        assert abs(ap - aps['pytorch', 1]) <= 0.001, (key, aps)


@pytest.fixture(scope='module')
def resnet_detr_onnx(tmp_path_factory):
    model = build_small()
    img, metas = random_batch(SHAPES)
    path = tmp_path_factory.mktemp('detr_resnet') / 'detr.onnx'
    shapes = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
    export_onnx(model, img, shapes, path, exporter='torchscript', dynamic=True)
    return model, path


def test_onnxruntime_ap_equals_pytorch_at_each_batch_size(resnet_detr_onnx, val_set, tmp_path):
    """MMDetection's semantics with ResNet: ONNX Runtime adds no gap to PyTorch's, at batch 1
    and at batch 2 (where padding reaches the backbone)."""
    model, onnx_file = resnet_detr_onnx
    aps = _ap_runs(model, SMALL_DETR, onnx_file, val_set, tmp_path)
    print('bbox mAP against the PyTorch batch-1 detections:', aps)
    assert aps['pytorch', 1] > 0.9, aps
    for batch_size in (1, 2):
        assert abs(aps['onnxruntime', batch_size] - aps['pytorch', batch_size]) <= 0.001, aps
