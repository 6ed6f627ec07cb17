"""Training pieces against hand-made cases and brute force; the loop's step, save and resume."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deploy.config import load_config
from deploy.spec import PreprocessConfig
from deploy.training import (
    FocalLoss,
    MaxIoUAssigner,
    PseudoSampler,
    RandomSampler,
    bbox_overlaps,
    detector_loss,
)
from deploy.training.assigners import AssignResult
from deploy.training.data import TrainTransformConfig, get_train_transform_cfg, transform_sample
from deploy.training.engine import load_training_checkpoint, save_training_checkpoint
from deploy.training.loop import build_train_model, train, train_step

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_RETINANET = ROOT / 'configs' / 'bundled' / 'retinanet_r18_tiny_synthetic.py'

#: the bundled RetinaNet shrunk further: 8 base channels, 32-channel FPN/head, 64 x 96 inputs
TINY = {
    'model.backbone.base_channels': 8,
    'model.neck.in_channels': [8, 16, 32, 64],
    'model.neck.out_channels': 32,
    'model.bbox_head.in_channels': 32,
    'model.bbox_head.feat_channels': 32,
    'model.bbox_head.num_classes': 2,
    'data.samples_per_gpu': 2,
    'data.workers_per_gpu': 0,
    'optimizer.lr': 0.001,
    'lr_config.warmup_iters': 2,
    'runner.max_epochs': 2,
}


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny models train much faster on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def box(x1, y1, x2, y2):
    return torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# overlaps and the assigner
# --------------------------------------------------------------------------------------------
def test_bbox_overlaps_iou_and_iof():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20]])
    b = torch.tensor([[5.0, 0, 15, 10], [30, 30, 40, 40]])
    iou = bbox_overlaps(a, b)
    assert iou[0, 0].item() == pytest.approx(50 / 150)
    assert iou[1, 0].item() == pytest.approx(100 / 400)
    assert iou[:, 1].tolist() == [0.0, 0.0]
    iof = bbox_overlaps(a, b, mode='iof')
    assert iof[0, 0].item() == pytest.approx(0.5)  # over the area of a[0]
    assert iof[1, 0].item() == pytest.approx(100 / 400)


def test_assigner_thresholds():
    """IoU >= 0.5 positive, in [0.4, 0.5) ignored, below 0.4 negative (RetinaNet's settings)."""
    gt = box(0, 0, 10, 10)
    candidates = torch.cat(
        [
            box(0, 0, 10, 12),  # IoU 100/120 = 0.83 -> positive
            box(0, 0, 10, 22),  # IoU 100/220 = 0.45 -> ignored
            box(0, 0, 10, 30),  # IoU 0.33 -> negative
            box(50, 50, 60, 60),  # IoU 0 -> negative
        ]
    )
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1)
    result = assigner.assign(candidates, gt, gt_labels=torch.tensor([3]))
    assert result.gt_inds.tolist() == [1, -1, 0, 0]
    assert result.labels.tolist() == [3, -1, -1, -1]
    assert result.max_overlaps[0].item() == pytest.approx(100 / 120)


def test_assigner_low_quality_match():
    """A gt whose best IoU is below pos_iou_thr still gets its best candidates (all ties)."""
    gts = torch.cat([box(0, 0, 10, 10), box(100, 100, 110, 110)])
    candidates = torch.cat(
        [
            box(0, 0, 10, 30),  # IoU 0.33 with gt 0
            box(0, 0, 30, 10),  # IoU 0.33 with gt 0 (a tie)
            box(0, 0, 10, 50),  # IoU 0.2 with gt 0
            box(100, 100, 110, 111),  # IoU 0.91 with gt 1
        ]
    )
    labels = torch.tensor([0, 1])
    low = MaxIoUAssigner(0.5, 0.4, min_pos_iou=0).assign(candidates, gts, gt_labels=labels)
    assert low.gt_inds.tolist() == [1, 1, 0, 2]
    assert low.labels.tolist() == [0, 0, -1, 1]
    first_only = MaxIoUAssigner(0.5, 0.4, min_pos_iou=0, gt_max_assign_all=False)
    assert first_only.assign(candidates, gts).gt_inds.tolist() == [1, 0, 0, 2]
    strict = MaxIoUAssigner(0.5, 0.4, min_pos_iou=0, match_low_quality=False)
    assert strict.assign(candidates, gts).gt_inds.tolist() == [0, 0, 0, 2]
    # min_pos_iou above the gt's best IoU: no low-quality match
    above = MaxIoUAssigner(0.5, 0.4, min_pos_iou=0.4).assign(candidates, gts)
    assert above.gt_inds.tolist() == [0, 0, 0, 2]


def test_assigner_ignore_boxes_and_empty_gt():
    gt = box(0, 0, 10, 10)
    candidates = torch.cat([box(0, 0, 10, 10), box(50, 50, 60, 60), box(80, 80, 90, 90)])
    ignore = box(45, 45, 70, 70)  # covers candidate 1 completely (IoF 1)
    with_ignore = MaxIoUAssigner(0.5, 0.4, ignore_iof_thr=0.5)
    assert with_ignore.assign(candidates, gt, ignore).gt_inds.tolist() == [1, -1, 0]
    # ignore_iof_thr=-1 (RetinaNet) disables ignore boxes
    assert MaxIoUAssigner(0.5, 0.4).assign(candidates, gt, ignore).gt_inds.tolist() == [1, 0, 0]
    empty = MaxIoUAssigner(0.5, 0.4).assign(candidates, torch.zeros(0, 4))
    assert empty.gt_inds.tolist() == [0, 0, 0]


# --------------------------------------------------------------------------------------------
# losses and samplers
# --------------------------------------------------------------------------------------------
def test_focal_loss_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(7, 3, generator=gen) * 3
    labels = torch.tensor([0, 3, 2, 3, 1, 3, 0])  # 3 = background
    weight = torch.tensor([1.0, 1, 0, 1, 1, 1, 0.5])
    alpha, gamma = 0.25, 2.0
    expected = 0.0
    for i in range(7):
        for c in range(3):
            p = 1 / (1 + math.exp(-pred[i, c].item()))
            if labels[i] == c:
                term = -alpha * (1 - p) ** gamma * math.log(p)
            else:
                term = -(1 - alpha) * p**gamma * math.log(1 - p)
            expected += weight[i].item() * term
    loss = FocalLoss(gamma=gamma, alpha=alpha)(pred, labels, weight, avg_factor=4)
    assert loss.item() == pytest.approx(expected / 4, rel=1e-5)
    assert FocalLoss(loss_weight=2.0)(pred, labels, weight, avg_factor=4).item() == pytest.approx(
        2 * expected / 4, rel=1e-5
    )


def _assignment(num_pos: int, num_neg: int, num_ignored: int = 0) -> AssignResult:
    gt_inds = torch.tensor([1] * num_pos + [0] * num_neg + [-1] * num_ignored)
    labels = torch.where(gt_inds > 0, 0, -1)
    return AssignResult(1, gt_inds, torch.zeros(len(gt_inds)), labels)


def test_sampler_counts():
    boxes = torch.rand(100, 4) * 10
    boxes[:, 2:] += boxes[:, :2] + 1
    gt = box(0, 0, 5, 5)
    pseudo = PseudoSampler().sample(_assignment(30, 60, 10), boxes, gt)
    assert (len(pseudo.pos_inds), len(pseudo.neg_inds)) == (30, 60)

    gen = torch.Generator().manual_seed(0)
    sampler = RandomSampler(64, 0.25, add_gt_as_proposals=False, generator=gen)
    many = sampler.sample(_assignment(30, 70), boxes, gt)
    assert (len(many.pos_inds), len(many.neg_inds)) == (16, 48)  # pos capped at num * fraction
    assert len(set(many.pos_inds.tolist())) == 16 and (many.pos_inds < 30).all()
    few = sampler.sample(_assignment(5, 95), boxes, gt)
    assert (len(few.pos_inds), len(few.neg_inds)) == (5, 59)  # negatives fill up to num
    bounded = RandomSampler(64, 0.25, neg_pos_ub=3, add_gt_as_proposals=False, generator=gen)
    assert len(bounded.sample(_assignment(5, 95), boxes, gt).neg_inds) == 15

    with_gt = RandomSampler(64, 0.25, add_gt_as_proposals=True, generator=gen).sample(
        _assignment(0, 100), boxes, gt, gt_labels=torch.tensor([2])
    )
    assert len(with_gt.pos_inds) == 1 and with_gt.pos_is_gt.tolist() == [1]
    assert with_gt.pos_bboxes.tolist() == gt.tolist() and with_gt.pos_gt_labels.tolist() == [2]
    assert len(with_gt.neg_inds) == 63


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def test_train_transform_resizes_and_flips_boxes_and_masks():
    transform = TrainTransformConfig(PreprocessConfig(), scale=(512, 320))
    image = np.zeros((100, 200, 3), np.uint8)
    masks = np.zeros((1, 100, 200), np.uint8)
    masks[0, 10:30, 20:60] = 1
    boxes = np.array([[20, 10, 60, 30]], np.float32)
    for flip in (False, True):
        out = transform_sample(image, boxes, np.zeros((0, 4), np.float32), masks, transform, flip)
        h, w = out['img_meta']['img_shape']
        assert (w, h) == (512, 256)  # (512, 320) keep-ratio: the long edge binds
        assert out['img'].shape == (3, 256, 512)  # already a multiple of 32
        ys, xs = torch.nonzero(out['gt_masks'][0], as_tuple=True)
        mask_box = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        np.testing.assert_allclose(out['gt_bboxes'][0].tolist(), mask_box, atol=1.5)
        expected_x1 = 512 - 60 * 2.56 if flip else 20 * 2.56
        assert out['gt_bboxes'][0, 0].item() == pytest.approx(expected_x1, abs=1e-3)


def test_train_transform_config_from_the_bundled_config():
    transform = get_train_transform_cfg(load_config(str(BUNDLED_RETINANET)))
    assert transform.flip_ratio == 0.5 and transform.keep_ratio
    assert transform.preprocess.size_divisor == 32 and transform.preprocess.to_rgb


# --------------------------------------------------------------------------------------------
# a training step, save and resume
# --------------------------------------------------------------------------------------------
def _tiny_cfg(tmp_path=None):
    options = dict(TINY)
    if tmp_path is not None:
        root = _write_tiny_coco(tmp_path)
        options.update(
            {
                'data.train.ann_file': str(root / 'train.json'),
                'data.train.img_prefix': str(root / 'images'),
                'data.train.pipeline.2.img_scale': (96, 64),
                'data.train.classes': ['blue', 'red'],
                'classes': None,
            }
        )
    return load_config(str(BUNDLED_RETINANET), options)


def _write_tiny_coco(tmp_path):
    """Two 60 x 90 images (one batch) with one or two coloured rectangles each, two classes."""
    root = tmp_path / 'coco'
    (root / 'images').mkdir(parents=True)
    gen = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(2):
        image = np.full((60, 90, 3), 90, np.uint8)
        for k in range(1 + i % 2):
            x, y = int(gen.integers(0, 50)), int(gen.integers(0, 25))
            w, h = int(gen.integers(15, 35)), int(gen.integers(15, 30))
            label = (i + k) % 2
            image[y : y + h, x : x + w] = (200, 40, 40) if label else (40, 40, 200)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i + 1,
                    category_id=label + 1,
                    bbox=[x, y, w, h],
                    area=w * h,
                    iscrowd=0,
                )
            )
        cv2.imwrite(str(root / 'images' / f'{i}.png'), image)
        images.append(dict(id=i + 1, file_name=f'{i}.png', height=60, width=90))
    categories = [dict(id=1, name='blue'), dict(id=2, name='red')]
    (root / 'train.json').write_text(
        json.dumps(dict(images=images, annotations=annotations, categories=categories))
    )
    return root


def _tiny_batch():
    img = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    metas = [
        dict(img_shape=(64, 96), pad_shape=(64, 96)),
        dict(img_shape=(60, 90), pad_shape=(64, 96)),
    ]
    return dict(
        img=img,
        img_metas=metas,
        gt_bboxes=[
            torch.tensor([[10.0, 10, 40, 50]]),
            torch.tensor([[50.0, 5, 90, 30], [5, 30, 30, 60]]),
        ],
        gt_labels=[torch.tensor([0]), torch.tensor([1, 0])],
    )


def test_one_training_step_lowers_the_loss():
    torch.manual_seed(0)
    model = build_train_model(_tiny_cfg())
    batch = _tiny_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = train_step(model, batch, optimizer)
    assert set(before) == {'loss_cls', 'loss_bbox', 'loss'}
    assert all(math.isfinite(v) and v > 0 for v in before.values())
    with torch.no_grad():
        after = float(sum(detector_loss(model, batch).values()))
    assert after < before['loss']


def test_save_and_resume_reproduce_the_next_step(tmp_path):
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    batch = _tiny_batch()
    model = build_train_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    train_step(model, batch, optimizer)
    path = save_training_checkpoint(
        model, tmp_path / 'step1.pth', dict(CLASSES=('a', 'b'), epoch=1), optimizer
    )
    expected = train_step(model, batch, optimizer)

    restored = build_train_model(cfg)
    checkpoint = load_training_checkpoint(path)
    assert checkpoint['meta']['CLASSES'] == ('a', 'b') and checkpoint['meta']['epoch'] == 1
    restored.load_state_dict(checkpoint['state_dict'])
    restored_optimizer = torch.optim.SGD(
        restored.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4
    )
    restored_optimizer.load_state_dict(checkpoint['optimizer'])
    assert train_step(restored, batch, restored_optimizer) == expected


def test_train_loop_resume_matches_an_uninterrupted_run(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    full = train(cfg, tmp_path / 'full', seed=3, progress=False, logger=None)
    assert len(full.epoch_losses) == 2 and full.class_names == ('blue', 'red')
    resumed = train(
        cfg,
        tmp_path / 'resumed',
        resume=str(tmp_path / 'full' / 'epoch_1.pth'),
        seed=3,
        progress=False,
        logger=None,
    )
    assert resumed.epoch_losses == full.epoch_losses[1:]
    a, b = resumed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the checkpoint is MMDetection's layout and loads for inference
    from deploy.apis.model import init_detector

    model, _ = init_detector(cfg, tmp_path / 'full' / 'latest.pth', logger=None)
    assert model.class_names == ('blue', 'red')
    assert 'resumed from' in (tmp_path / 'resumed' / 'train.log').read_text()


def test_mask_rcnn_losses_and_backward():
    """RPN, R-CNN and mask losses of a tiny Mask R-CNN: all present, finite and trainable."""
    options = {
        'model.backbone.base_channels': 8,
        'model.backbone.init_cfg': None,
        'model.neck.in_channels': [8, 16, 32, 64],
        'model.neck.out_channels': 16,
        'model.rpn_head.in_channels': 16,
        'model.rpn_head.feat_channels': 16,
        'model.roi_head.bbox_roi_extractor.out_channels': 16,
        'model.roi_head.bbox_head.in_channels': 16,
        'model.roi_head.bbox_head.fc_out_channels': 32,
        'model.roi_head.bbox_head.num_classes': 2,
        'model.roi_head.mask_roi_extractor.out_channels': 16,
        'model.roi_head.mask_head.in_channels': 16,
        'model.roi_head.mask_head.conv_out_channels': 16,
        'model.roi_head.mask_head.num_classes': 2,
    }
    cfg = load_config(
        str(ROOT / 'configs' / 'bundled' / 'mask_rcnn_r18_tiny_synthetic.py'), options
    )
    torch.manual_seed(0)
    model = build_train_model(cfg)
    batch = _tiny_batch()
    batch['gt_masks'] = []
    for boxes in batch['gt_bboxes']:
        masks = torch.zeros(len(boxes), 64, 96, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
            m[y1:y2, x1:x2] = 1
        batch['gt_masks'].append(masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = train_step(model, batch, optimizer)
    expected = {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask', 'loss'}
    assert set(losses) == expected
    assert all(math.isfinite(v) and v > 0 for v in losses.values())
    # every trainable part received a gradient, the frozen stem none
    assert model.roi_head.mask_head.conv_logits.weight.grad is not None
    assert model.rpn_head.rpn_cls.weight.grad is not None
    assert model.backbone.conv1.weight.grad is None
