"""The test pipeline against hand-computed MMCV values, and the COCO data set / loader."""

import cv2
import numpy as np
import pytest
import torch

from deploy.datasets.coco import CocoDetectionDataset, build_dataloader
from deploy.datasets.pipeline import (
    TestPipeline,
    collate,
    load_image,
    normalize,
    pad_to,
    rescale_size,
)
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.errors import ConfigError, ImageError
from deploy.spec import PreprocessConfig

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


@pytest.mark.parametrize(
    'w, h, scale, expected',
    [
        (640, 480, (1333, 800), (1067, 800)),  # factor 800 / 480
        (500, 375, (1333, 800), (1067, 800)),  # factor 800 / 375 = 2.1333
        (375, 500, (1333, 800), (800, 1067)),  # portrait: the short side still goes to 800
        (2000, 500, (1333, 800), (1333, 333)),  # the long side limits: 500 * 0.6665 = 333.25
        (640, 480, (800, 1333), (1067, 800)),  # the order of the two edges does not matter
        (1000, 800, (512, 320), (400, 320)),  # downscale
    ],
)
def test_rescale_size_matches_mmcv(w, h, scale, expected):
    size, factor = rescale_size(w, h, scale)
    assert size == expected
    assert factor == pytest.approx(min(max(scale) / max(w, h), min(scale) / min(w, h)))


def test_pipeline_resize_pad_and_meta():
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    tensor, meta = TestPipeline(PreprocessConfig())(image, img_id=3)
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (3, 800, 1088)
    assert meta['ori_shape'] == (480, 640)
    assert meta['img_shape'] == (800, 1067)
    assert meta['pad_shape'] == meta['batch_input_shape'] == (800, 1088)
    assert meta['img_id'] == 3 and meta['filename'] is None
    assert meta['scale_factor'].dtype == np.float32
    np.testing.assert_array_equal(
        meta['scale_factor'], np.array([1067 / 640, 800 / 480] * 2, np.float32)
    )
    resized = cv2.resize(image, (1067, 800), interpolation=cv2.INTER_LINEAR)
    expected = normalize(resized, MEAN, STD, to_rgb=True).transpose(2, 0, 1)
    np.testing.assert_array_equal(tensor[:, :800, :1067].numpy(), expected)
    assert (tensor[:, :, 1067:] == 0).all()


def test_pipeline_without_keep_ratio_or_divisor():
    image = np.zeros((100, 300, 3), np.uint8)
    cfg = PreprocessConfig(scale=(320, 250), keep_ratio=False, size_divisor=None)
    tensor, meta = TestPipeline(cfg)(image)
    assert tuple(tensor.shape) == (3, 250, 320)
    assert meta['img_shape'] == meta['pad_shape'] == (250, 320)
    np.testing.assert_array_equal(
        meta['scale_factor'], np.array([320 / 300, 250 / 100] * 2, np.float32)
    )


def test_normalize_order_and_mmcv_bit_exactness():
    image = np.empty((2, 3, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # B, G, R
    rgb = normalize(image, (1, 2, 3), (1, 2, 4), to_rgb=True)
    np.testing.assert_allclose(rgb[0, 0], [(30 - 1) / 1, (20 - 2) / 2, (10 - 3) / 4])
    bgr = normalize(image, (1, 2, 3), (1, 2, 4), to_rgb=False)
    np.testing.assert_allclose(bgr[0, 0], [(10 - 1) / 1, (20 - 2) / 2, (30 - 3) / 4])
    assert rgb.dtype == np.float32
    np.testing.assert_array_equal(image[0, 0], [10, 20, 30])  # the input is left alone
    # MMCV: float32, subtract float32(mean), multiply by float64(1 / std), round to float32
    image = np.random.default_rng(1).integers(0, 256, (31, 47, 3), dtype=np.uint8)
    x = image[..., ::-1].astype(np.float32) - np.float32(MEAN)
    reference = (x.astype(np.float64) * (1 / np.float64(STD))).astype(np.float32)
    np.testing.assert_array_equal(normalize(image, MEAN, STD, to_rgb=True), reference)


def test_pad_to_multiple_with_pad_value():
    cfg = PreprocessConfig(scale=(100, 50), size_divisor=32, pad_value=-7.0)
    tensor, meta = TestPipeline(cfg)(np.full((50, 70, 3), 128, np.uint8))
    assert meta['img_shape'] == (50, 70) and meta['pad_shape'] == (64, 96)
    assert (tensor[:, 50:, :] == -7).all() and (tensor[:, :, 70:] == -7).all()
    assert (tensor[:, :50, :70] != -7).all()
    padded = pad_to(np.ones((2, 3), np.float32), 4, 5, value=9)
    assert padded.shape == (4, 5) and padded[3, 4] == 9 and padded[1, 2] == 1


def test_collate_pads_to_the_largest_image():
    pipeline = TestPipeline(PreprocessConfig(scale=(200, 100), pad_value=-1.0))
    first = pipeline(np.zeros((100, 150, 3), np.uint8))  # -> 100 x 150, padded 128 x 160
    second = pipeline(np.zeros((200, 100, 3), np.uint8))  # -> 200 x 100, padded 224 x 128
    batch, metas = collate([first, second], pad_value=-1.0)
    assert tuple(batch.shape) == (2, 3, 224, 160)
    assert [m['batch_input_shape'] for m in metas] == [(224, 160), (224, 160)]
    assert [m['pad_shape'] for m in metas] == [(128, 160), (224, 128)]
    torch.testing.assert_close(batch[0, :, :128, :160], first[0])
    assert (batch[0, :, 128:] == -1).all() and (batch[1, :, :, 128:] == -1).all()
    assert first[1]['batch_input_shape'] == (128, 160), 'samples are not modified'


def test_load_image_and_errors(tmp_path):
    image = np.zeros((5, 7, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    cv2.imwrite(str(tmp_path / 'blue.png'), image)
    loaded = load_image(tmp_path / 'blue.png')
    assert loaded.dtype == np.uint8 and loaded.shape == (5, 7, 3)
    np.testing.assert_array_equal(loaded[0, 0], [255, 0, 0])
    gray = tmp_path / 'gray.png'
    cv2.imwrite(str(gray), np.full((4, 4), 9, np.uint8))
    assert load_image(gray).shape == (4, 4, 3), 'IMREAD_COLOR always gives three channels'

    garbage = tmp_path / 'garbage.jpg'
    garbage.write_bytes(b'this is not a jpeg' * 10)
    for bad in (garbage, tmp_path / 'missing.jpg'):
        with pytest.raises(ImageError) as err:
            load_image(bad)
        assert str(bad) in str(err.value) and '\n' not in str(err.value)
    with pytest.raises(ImageError):
        TestPipeline(PreprocessConfig())(garbage)


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco_data')
    paths = generate_synthetic_coco(root, num_train=0, num_val=3, seed=11)
    cfg = PreprocessConfig(scale=(320, 192), pad_value=0.5)
    return CocoDetectionDataset(paths['val'], paths['val_img_prefix'], TestPipeline(cfg))


def test_coco_dataset(val_set):
    assert len(val_set) == 3
    assert val_set.cat_ids == sorted(c['id'] for c in CATEGORIES)
    assert val_set.class_names == tuple(c['name'] for c in CATEGORIES)
    tensor, meta = val_set[1]
    assert meta['img_id'] == val_set.img_ids[1] == sorted(val_set.coco.getImgIds())[1]
    info = val_set.coco.imgs[meta['img_id']]
    assert meta['ori_shape'] == (info['height'], info['width'])
    assert meta['filename'].endswith(info['file_name'])
    assert tensor.shape[1:] == meta['pad_shape']


def test_missing_annotation_file_is_a_config_error(tmp_path):
    missing = tmp_path / 'nope.json'
    with pytest.raises(ConfigError, match='nope.json'):
        CocoDetectionDataset(missing, tmp_path, TestPipeline(PreprocessConfig()))


@pytest.mark.parametrize('num_workers', [0, 1])
def test_dataloader_keeps_order(val_set, num_workers):
    loader = build_dataloader(val_set, batch_size=2, num_workers=num_workers)
    batches = list(loader)
    assert [len(metas) for _, metas in batches] == [2, 1]
    assert [m['img_id'] for _, metas in batches for m in metas] == val_set.img_ids
    batch, metas = batches[0]
    assert tuple(batch.shape[2:]) == metas[0]['batch_input_shape']
    for i, meta in enumerate(metas):  # padding uses the pipeline's pad value
        h, w = meta['pad_shape']
        if h < batch.shape[2]:
            assert (batch[i, :, h:] == 0.5).all()
        if w < batch.shape[3]:
            assert (batch[i, :, :, w:] == 0.5).all()
