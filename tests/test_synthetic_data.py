"""The synthetic COCO generator: deterministic bytes, sane annotations, occlusion resolved."""

import importlib.util
import json

import cv2
import numpy as np
import pytest
from conftest import ROOT
from pycocotools import mask as mask_utils

from deploy.datasets.synthetic import (
    CATEGORIES,
    MIN_VISIBLE_AREA,
    generate_synthetic_coco,
    mask_to_annotation,
    mask_to_polygons,
    render_image,
    render_sample_image,
)


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob('*') if p.is_file()}


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic')
    paths = generate_synthetic_coco(root / 'a', num_train=4, num_val=10, seed=7)
    return root, paths


def test_same_seed_gives_identical_bytes(generated, tmp_path):
    root, paths = generated
    generate_synthetic_coco(tmp_path / 'b', num_train=4, num_val=10, seed=7)
    first, second = _tree_bytes(root / 'a'), _tree_bytes(tmp_path / 'b')
    assert sorted(first) == sorted(second)
    assert len([n for n in first if n.endswith('.jpg')]) == 14
    assert all(first[name] == second[name] for name in first)
    generate_synthetic_coco(tmp_path / 'c', num_train=0, num_val=2, seed=8)
    other = (tmp_path / 'c' / 'annotations' / 'instances_val2017.json').read_bytes()
    assert other != first['annotations/instances_val2017.json']


def test_layout_mirrors_coco(generated):
    root, paths = generated
    assert paths['train'] == root / 'a' / 'annotations' / 'instances_train2017.json'
    assert paths['val'] == root / 'a' / 'annotations' / 'instances_val2017.json'
    for split in ('train', 'val'):
        data = json.loads(paths[split].read_text())
        assert data['categories'] == [dict(c) for c in CATEGORIES]
        for img in data['images']:
            image = cv2.imread(str(root / 'a' / f'{split}2017' / img['file_name']))
            assert image.shape == (img['height'], img['width'], 3)
    train_ids = {i['id'] for i in json.loads(paths['train'].read_text())['images']}
    val_ids = {i['id'] for i in json.loads(paths['val'].read_text())['images']}
    assert not train_ids & val_ids


def test_annotations_are_consistent(generated):
    _, paths = generated
    data = json.loads(paths['val'].read_text())
    images = {img['id']: img for img in data['images']}
    cat_ids = {c['id'] for c in data['categories']}
    assert cat_ids != set(range(1, len(cat_ids) + 1)), 'ids are meant to be non-contiguous'
    assert len({a['id'] for a in data['annotations']}) == len(data['annotations'])
    sizes = []
    for ann in data['annotations']:
        img = images[ann['image_id']]
        h, w = img['height'], img['width']
        assert 240 <= min(h, w) <= 480 and 0.49 <= w / h <= 2.01
        x, y, bw, bh = ann['bbox']
        assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
        assert ann['category_id'] in cat_ids and ann['iscrowd'] == 0
        assert ann['area'] >= MIN_VISIBLE_AREA
        # the polygons rasterise (as COCO does) back to the stored box and area
        mask = mask_utils.decode(
            mask_utils.merge(mask_utils.frPyObjects(ann['segmentation'], h, w))
        )
        assert abs(int(mask.sum()) - ann['area']) <= 0.02 * ann['area'] + 2
        ys, xs = np.nonzero(mask)
        assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
        assert abs(xs.max() + 1 - (x + bw)) <= 1 and abs(ys.max() + 1 - (y + bh)) <= 1
        sizes.append(np.sqrt(ann['area']))
    per_image = np.bincount([a['image_id'] - min(images) for a in data['annotations']])
    assert per_image.max() <= 8
    assert len({a['category_id'] for a in data['annotations']}) >= 4
    assert min(sizes) < 32 < 96 < max(sizes) * 1.5, 'scale variation: small to large objects'


def test_occlusion_is_reflected_in_masks():
    gen = np.random.default_rng(0)
    occluded = 0
    for _ in range(15):
        image, objects = render_image(gen)
        owned = np.zeros(image.shape[:2], np.int32)
        for obj in objects:
            area = int(obj['mask'].sum())
            assert area <= obj['full_area']
            occluded += area < obj['full_area']
            owned += obj['mask']
            ann = mask_to_annotation(obj['mask'])
            assert ann['area'] == area
        assert owned.max() <= 1, 'each pixel shows at most one object'
    assert occluded > 0


def test_polygons_keep_holes():
    mask = np.zeros((60, 80), bool)
    cv2.circle(mask.view(np.uint8), (40, 30), 20, 1, -1)
    cv2.circle(mask.view(np.uint8), (40, 30), 9, 0, -1)
    mask[50:53, 5:6] = True  # a separate one-pixel-wide sliver
    polygons = mask_to_polygons(mask)
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 60, 80)))
    assert decoded[30, 40] == 0, 'the hole stays empty'
    iou = (decoded & mask).sum() / (decoded | mask).sum()
    assert iou > 0.99


def test_cli_and_sample_image(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'generate_synthetic_coco', ROOT / 'tools' / 'dataset' / 'generate_synthetic_coco.py'
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'cli'
    assert tool.main(['--out-dir', str(out), '--num-train', '1', '--num-val', '1']) == 0
    assert (out / 'annotations' / 'instances_train2017.json').is_file()
    assert len(list((out / 'val2017').glob('*.jpg'))) == 1
    sample = render_sample_image(tmp_path / 'demo.png', seed=3)
    assert cv2.imread(str(sample)).ndim == 3
    assert render_sample_image(tmp_path / 'again.png', seed=3).read_bytes() == sample.read_bytes()
