"""The synthetic data set, the test pipeline (MMCV semantics) and COCO evaluation."""

import hashlib

import cv2
import numpy as np
import pytest
import torch

from deploy.datasets.coco import load_coco
from deploy.datasets.pipeline import TestPipeline, collate, load_image, rescale_size
from deploy.datasets.synthetic import CATEGORIES, generate_synthetic_coco
from deploy.errors import ConfigError, ImageError
from deploy.evaluation.coco_metric import evaluate_coco, results_to_coco_json
from deploy.spec import PreprocessConfig
from deploy.structures import DetectionResult


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob('*'))
        if p.is_file()
    }


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('syn')
    generate_synthetic_coco(root, num_train=3, num_val=8, seed=5)
    return root


def test_generator_is_deterministic(dataset, tmp_path):
    generate_synthetic_coco(tmp_path, num_train=3, num_val=8, seed=5)
    assert _digest(dataset) == _digest(tmp_path)


def test_annotations_are_consistent(dataset):
    coco = load_coco(dataset / 'annotations' / 'instances_val2017.json')
    assert sorted(coco.getCatIds()) == [c['id'] for c in CATEGORIES]
    sizes = set()
    for img in coco.loadImgs(coco.getImgIds()):
        image = load_image(dataset / 'val2017' / img['file_name'])
        assert image.shape[:2] == (img['height'], img['width'])
        sizes.add(image.shape[:2])
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img['id']])):
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= img['width'] and y + h <= img['height']
            mask = coco.annToMask(ann)
            # The polygon covers what the stored area says (contour rasterisation adds a rim).
            assert abs(mask.sum() - ann['area']) <= 0.25 * ann['area'] + 40
    assert len(sizes) > 4, 'images of varied sizes'
    assert len(coco.getAnnIds()) >= 8


def test_rescale_size_matches_mmcv():
    assert rescale_size(640, 480, (1333, 800)) == ((1067, 800), 800 / 480)
    assert rescale_size(500, 375, (1333, 800))[0] == (1067, 800)
    # A tall image is limited by the long edge: 1333 / 1000.
    assert rescale_size(300, 1000, (1333, 800))[0] == (400, 1333)


def test_pipeline_resize_normalise_pad():
    image = np.zeros((480, 640, 3), np.uint8)
    image[..., 0] = 10  # blue channel in BGR
    cfg = PreprocessConfig(
        mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0), to_rgb=True, scale=(1333, 800), size_divisor=32
    )
    tensor, meta = TestPipeline(cfg)(image)
    assert meta['img_shape'] == (800, 1067) and meta['pad_shape'] == (800, 1088)
    np.testing.assert_allclose(meta['scale_factor'], [1067 / 640, 800 / 480] * 2, rtol=1e-6)
    assert tensor.shape == (3, 800, 1088)
    # to_rgb: blue ends last; (10 - 3) / 2 = 3.5; padding is 0.
    assert tensor[2, 0, 0] == pytest.approx(3.5) and tensor[0, 0, 0] == pytest.approx(-0.5)
    assert torch.all(tensor[:, :, 1067:] == 0)


def test_pipeline_fixed_shape_fits_and_pads():
    tensor, meta = TestPipeline(PreprocessConfig(), fixed_shape=(320, 320))(
        np.zeros((100, 200, 3), np.uint8)
    )
    assert tensor.shape == (3, 320, 320) and meta['img_shape'] == (160, 320)


def test_collate_pads_to_largest():
    cfg = PreprocessConfig(scale=(200, 100))
    pipe = TestPipeline(cfg)
    batch, metas = collate(
        [pipe(np.zeros((100, 200, 3), np.uint8)), pipe(np.zeros((200, 100, 3), np.uint8))]
    )
    assert batch.shape == (2, 3, 224, 224)
    assert all(m['batch_input_shape'] == (224, 224) for m in metas)


def test_unreadable_image(tmp_path):
    bad = tmp_path / 'garbage.jpg'
    bad.write_bytes(b'\x00\x01 not an image')
    with pytest.raises(ImageError, match='garbage.jpg'):
        load_image(bad)
    with pytest.raises(ImageError, match='not found'):
        load_image(tmp_path / 'missing.png')


def test_missing_annotation_file(tmp_path):
    with pytest.raises(ConfigError, match='annotation file not found'):
        load_coco(tmp_path / 'none.json')


def _ground_truth_results(coco, shift=0.0):
    ids, cats = sorted(coco.getImgIds()), sorted(coco.getCatIds())
    results = []
    for i in ids:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[i]))
        boxes = np.array(
            [
                [
                    a['bbox'][0] + shift,
                    a['bbox'][1],
                    a['bbox'][0] + a['bbox'][2] + shift,
                    a['bbox'][1] + a['bbox'][3],
                ]
                for a in anns
            ],
            np.float32,
        ).reshape(-1, 4)
        results.append(
            DetectionResult(
                boxes,
                np.linspace(1, 0.5, len(anns)).astype(np.float32),
                np.array([cats.index(a['category_id']) for a in anns], np.int64),
                masks=[coco.annToMask(a).astype(bool) for a in anns],
            )
        )
    return results, ids, cats


def test_coco_eval_ground_truth_is_perfect_and_shift_hurts(dataset):
    ann_file = dataset / 'annotations' / 'instances_val2017.json'
    coco = load_coco(ann_file)
    results, ids, cats = _ground_truth_results(coco)
    quiet = dict(logger=lambda *a: None)
    perfect = evaluate_coco(ann_file, results, ids, cats, ('bbox', 'segm', 'proposal'), **quiet)
    assert perfect['bbox_mAP'] == pytest.approx(1.0) and perfect['segm_mAP'] == pytest.approx(1.0)
    assert perfect['AR@100'] == pytest.approx(1.0)
    shifted = evaluate_coco(
        ann_file, _ground_truth_results(coco, shift=8.0)[0], ids, cats, ('bbox',), **quiet
    )
    assert shifted['bbox_mAP'] < 0.9
    fast = evaluate_coco(
        ann_file, results, ids, cats, ('bbox', 'segm'), backend='faster-coco-eval', **quiet
    )
    assert fast['bbox_mAP'] == pytest.approx(perfect['bbox_mAP'], abs=1e-9)
    assert fast['segm_mAP'] == pytest.approx(perfect['segm_mAP'], abs=1e-9)


def test_labels_beyond_the_data_set_are_dropped():
    result = DetectionResult(
        np.array([[0, 0, 5, 5], [1, 1, 4, 4]], np.float32),
        np.array([0.9, 0.8], np.float32),
        np.array([1, 7], np.int64),
    )
    with pytest.warns(UserWarning, match='labels outside the 2 categories'):
        dets = results_to_coco_json([result], [3], [10, 20])
    assert [d['category_id'] for d in dets] == [20]
    assert dets[0]['bbox'] == [0.0, 0.0, 5.0, 5.0]


def test_visualisation_draws_something(tmp_path):
    from deploy.visualization import draw_detections, save_image

    image = np.zeros((64, 64, 3), np.uint8)
    result = DetectionResult(
        np.array([[5, 5, 40, 40]], np.float32), np.array([0.9], np.float32), np.array([0], np.int64)
    )
    drawn = draw_detections(image, result, ('shape',))
    assert drawn.any() and not image.any()
    save_image(tmp_path / 'x.png', drawn)
    assert cv2.imread(str(tmp_path / 'x.png')).shape == (64, 64, 3)


def test_labels_stay_attached_to_their_boxes():
    """Crowded tags move along their own box's edges, never below it onto another object."""
    from deploy.visualization import place_label

    # two large boxes take the spots above and inside the top of the small one inside them
    boxes = [(20, 30, 200, 120), (20, 44, 200, 110), (24, 34, 70, 60)]
    taken: list = []
    for box in boxes:
        x, y = place_label(box, (60, 14), taken, 240, 320)
        bx1, by1, bx2, by2 = box
        # the tag's rectangle touches or overlaps its box (one pixel of slack)
        assert x <= bx2 + 1 and x + 60 >= bx1 - 1 and y <= by2 + 1 and y + 14 >= by1 - 1, box
    assert taken[2][3] <= 60, 'the small box tag went below it'
    assert len(set(taken)) == 3
