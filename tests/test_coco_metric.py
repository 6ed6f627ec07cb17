"""COCO evaluation: ground truth scores 1.0, worse boxes score less, both evaluators agree."""

import json
import warnings

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from deploy.datasets.coco import load_coco
from deploy.datasets.synthetic import generate_synthetic_coco
from deploy.errors import ConfigError
from deploy.evaluation.coco_metric import (
    evaluate_coco,
    format_only,
    results_to_coco_json,
    summary_line,
)
from deploy.structures import DetectionResult


@pytest.fixture(scope='module')
def gt(tmp_path_factory):
    """An 8-image val set, and its ground truth turned into perfect detections."""
    root = tmp_path_factory.mktemp('metric')
    ann_file = generate_synthetic_coco(root, num_train=0, num_val=8, seed=21)['val']
    coco = load_coco(ann_file)
    img_ids = sorted(coco.getImgIds())
    cat_ids = sorted(coco.getCatIds())
    results = []
    for img_id in img_ids:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)])
        results.append(
            DetectionResult(
                boxes=boxes.astype(np.float32).reshape(-1, 4),
                scores=np.linspace(1.0, 0.5, len(anns)).astype(np.float32),
                labels=np.array([cat_ids.index(a['category_id']) for a in anns], np.int64),
                masks=np.stack([coco.annToMask(a).astype(bool) for a in anns]),
            )
        )
    return dict(ann_file=ann_file, coco=coco, img_ids=img_ids, cat_ids=cat_ids, results=results)


def _shifted(results, fraction, seed=0, extra=0):
    """Boxes moved by ``fraction`` of their size, plus ``extra`` random false positives each."""
    gen = np.random.default_rng(seed)
    out = []
    for r in results:
        size = np.tile(r.boxes[:, 2:] - r.boxes[:, :2], 2)
        boxes = r.boxes + fraction * size * gen.uniform(0.5, 1.0, (len(r), 1))
        scores = gen.uniform(0.3, 1.0, len(r))
        labels = r.labels
        if extra:
            xy = gen.uniform(0, 200, (extra, 2))
            boxes = np.concatenate([boxes, np.hstack([xy, xy + gen.uniform(10, 80, (extra, 2))])])
            scores = np.concatenate([scores, gen.uniform(0, 1, extra)])
            labels = np.concatenate([labels, gen.integers(0, 6, extra)])
        out.append(
            DetectionResult(boxes.astype(np.float32), scores.astype(np.float32), labels, None)
        )
    return out


def test_ground_truth_scores_one(gt):
    lines = []
    metrics = evaluate_coco(
        gt['ann_file'],
        gt['results'],
        gt['img_ids'],
        gt['cat_ids'],
        metrics=('bbox', 'segm', 'proposal'),
        classwise=True,
        logger=lines.append,
    )
    for prefix in ('bbox', 'segm'):
        for key in ('mAP', 'mAP_50', 'mAP_75'):
            assert metrics[f'{prefix}_{key}'] == pytest.approx(1.0), (prefix, key)
    assert metrics['AR@100'] == pytest.approx(1.0) and 'AR_l@1000' in metrics
    assert metrics['bbox_circle_AP'] == pytest.approx(1.0)
    table = '\n'.join(lines)
    assert table.count('Average Precision') == 18 and table.count('Average Recall') == 18
    # each table ends with its one-line summary
    assert 'bbox: AP 1.000  AP50 1.000  AP75 1.000  APs ' in table
    assert 'segm: AP 1.000  AP50 1.000' in table and 'proposal: AR@100 1.000' in table


def test_summary_line_marks_what_coco_could_not_score():
    names = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
    metrics = dict(zip([f'bbox_{n}' for n in names], [0.5, 0.7, 0.6, -1.0, 0.4, 0.55]))
    assert summary_line('bbox', metrics) == (
        'bbox: AP 0.500  AP50 0.700  AP75 0.600  APs -  APm 0.400  APl 0.550'
    )


def test_shifted_boxes_score_lower(gt):
    args = (gt['ann_file'], _shifted(gt['results'], 0.15), gt['img_ids'], gt['cat_ids'])
    metrics = evaluate_coco(*args, logger=None)
    assert 0.0 < metrics['bbox_mAP'] < 0.8
    assert metrics['bbox_mAP_50'] > metrics['bbox_mAP_75']


@pytest.mark.parametrize('metric', ['bbox', 'segm', 'proposal'])
def test_faster_coco_eval_gives_identical_numbers(gt, metric):
    pytest.importorskip('faster_coco_eval')
    if metric == 'segm':  # imperfect masks: each ground-truth mask moved 4 px to the right
        results = [
            DetectionResult(s.boxes, s.scores, r.labels, np.roll(r.masks, 4, axis=2))
            for s, r in zip(_shifted(gt['results'], 0.1), gt['results'])
        ]
    else:
        results = _shifted(gt['results'], 0.1, extra=5)
    args = (gt['coco'], results, gt['img_ids'], gt['cat_ids'])
    reference = evaluate_coco(*args, metrics=(metric,), logger=None)
    faster = evaluate_coco(*args, metrics=(metric,), backend='faster-coco-eval', logger=None)
    assert reference.keys() == faster.keys()
    for key, value in reference.items():
        assert faster[key] == pytest.approx(value, abs=1e-12), key
    assert 0.0 < reference[next(iter(reference))] < 1.0


def test_labels_beyond_the_categories_are_dropped_with_one_warning(gt):
    extra = []
    for r in gt['results']:
        extra.append(
            DetectionResult(
                np.concatenate([r.boxes, r.boxes]),
                np.concatenate([r.scores, np.ones(len(r), np.float32)]),
                np.concatenate([r.labels, np.full(len(r), 80, np.int64)]),
            )
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        dets = results_to_coco_json(extra, gt['img_ids'], gt['cat_ids'])
    assert len([w for w in caught if 'categories' in str(w.message)]) == 1
    assert len(dets) == sum(len(r) for r in gt['results'])
    with pytest.warns(UserWarning):
        metrics = evaluate_coco(gt['coco'], extra, gt['img_ids'], gt['cat_ids'], logger=None)
    assert metrics['bbox_mAP'] == pytest.approx(1.0)


def test_results_to_coco_json_format():
    mask = np.zeros((6, 8), bool)
    mask[1:3, 2:5] = True
    result = DetectionResult(
        boxes=np.array([[2, 1, 5, 3], [0, 0, 1, 1]], np.float32),
        scores=np.array([0.9, 0.4], np.float32),
        labels=np.array([1, 0]),
        masks=np.stack([mask, mask]),
    )
    dets = results_to_coco_json([result, DetectionResult.empty()], [42, 43], [3, 8])
    assert [d['category_id'] for d in dets] == [8, 3]
    assert dets[0]['image_id'] == 42 and dets[0]['bbox'] == [2.0, 1.0, 3.0, 2.0]
    assert dets[0]['score'] == pytest.approx(0.9)
    rle = dets[0]['segmentation']
    assert isinstance(rle['counts'], str) and rle['size'] == [6, 8]
    np.testing.assert_array_equal(mask_utils.decode(dict(rle, counts=rle['counts'].encode())), mask)
    # RLE dicts stream through unchanged, counts as str
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    streamed = DetectionResult(result.boxes[:1], result.scores[:1], result.labels[:1], [encoded])
    assert results_to_coco_json([streamed], [1], [3, 8])[0]['segmentation'] == rle
    json.dumps(dets)
    box_only = results_to_coco_json([result], [42], [3, 8], with_masks=False)
    assert 'segmentation' not in box_only[0]


def test_format_only_writes_json_atomically(gt, tmp_path):
    out = format_only(gt['results'][:2], gt['img_ids'][:2], gt['cat_ids'], tmp_path / 'r.json')
    dets = json.loads(out.read_text())
    assert len(dets) == sum(len(r) for r in gt['results'][:2])
    assert 'segmentation' in dets[0] and 'bbox' in dets[0]
    assert [p.name for p in tmp_path.iterdir()] == ['r.json']


def test_bad_arguments(gt):
    args = (gt['ann_file'], gt['results'], gt['img_ids'], gt['cat_ids'])
    with pytest.raises(ConfigError, match='unknown metric'):
        evaluate_coco(*args, metrics=('keypoints',), logger=None)
    with pytest.raises(ConfigError, match='backend'):
        evaluate_coco(*args, backend='nope', logger=None)
    boxes_only = _shifted(gt['results'], 0.0)
    with pytest.raises(ConfigError, match='no masks'):
        evaluate_coco(gt['coco'], boxes_only, gt['img_ids'], gt['cat_ids'], metrics='segm')
    empty = [DetectionResult.empty() for _ in gt['img_ids']]
    metrics = evaluate_coco(gt['coco'], empty, gt['img_ids'], gt['cat_ids'], logger=None)
    assert metrics['bbox_mAP'] == 0.0


def test_pseudo_ground_truth_scores_the_reference_perfectly_and_a_drift_lower(gt, tmp_path):
    from deploy.evaluation.pseudo_ground_truth import write_pseudo_ground_truth

    reference = _shifted(gt['results'], 0.05, seed=3, extra=2)
    coco_results = results_to_coco_json(reference, gt['img_ids'], gt['cat_ids'])
    pseudo = write_pseudo_ground_truth(coco_results, gt['ann_file'], tmp_path / 'p.json')
    data = json.loads(pseudo.read_text())
    assert len(data['images']) == len(gt['img_ids']) and data['categories']
    args = (gt['img_ids'], gt['cat_ids'])
    same = evaluate_coco(pseudo, reference, *args, logger=None)
    drifted = evaluate_coco(pseudo, _shifted(reference, 0.15, seed=4), *args, logger=None)
    assert same['bbox_mAP'] == pytest.approx(1.0)
    assert drifted['bbox_mAP'] < 0.8


def test_pseudo_ground_truth_selection():
    from deploy.errors import DeployError
    from deploy.evaluation.pseudo_ground_truth import pseudo_ground_truth

    annotations = dict(
        images=[dict(id=i, width=100, height=100, file_name=f'{i}.jpg') for i in (1, 2, 3)],
        categories=[dict(id=5, name='a')],
    )
    dets = [
        dict(image_id=1, category_id=5, bbox=[0, 0, 10, 10], score=0.9),
        dict(image_id=1, category_id=5, bbox=[20, 20, 10, 10], score=0.95),
        dict(image_id=1, category_id=5, bbox=[40, 40, 1, 10], score=0.99),  # degenerate
        dict(image_id=1, category_id=5, bbox=[60, 60, 10, 10], score=0.1),  # beyond per_image
        dict(image_id=3, category_id=5, bbox=[0, 0, 30, 30], score=0.5),
    ]
    data = pseudo_ground_truth(dets, annotations, per_image=3, num_images=2)
    assert [img['id'] for img in data['images']] == [1, 2]  # image 2 kept though empty
    assert [a['bbox'][0] for a in data['annotations']] == [20, 0]
    assert all(a['iscrowd'] == 0 and a['area'] == 100 for a in data['annotations'])
    with pytest.raises(DeployError, match='no usable detections'):
        pseudo_ground_truth(dets[2:3], annotations)
