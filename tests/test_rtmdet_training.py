"""RTMDet's training pieces against hand computations: quality focal loss, GIoU loss, the dynamic
soft-label assigner, and one training step of a shrunk bundled RTMDet."""

import math
from pathlib import Path

import pytest
import torch

from deploy.config import load_config
from deploy.training import bbox_overlaps
from deploy.training.loop import build_train_model, train_step
from deploy.training.rtmdet_losses import GIoULoss, QualityFocalLoss, generalized_iou
from deploy.training.rtmdet_targets import DynamicSoftLabelAssigner, pad_to_stride

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_RTMDET = ROOT / 'configs' / 'bundled' / 'rtmdet_tiny_synthetic.py'


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_quality_focal_loss_against_a_hand_computation():
    # One positive of class 0 with target score 0.8 and p = (0.5, 0.75); one background row.
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 2])
    scores = torch.tensor([0.8, 0.0])
    loss = QualityFocalLoss(beta=2.0, reduction='none')(logits, (labels, scores))
    # BCE(0.5 vs 0.8) = ln 2, modulated by |0.8 - 0.5|^2; BCE(0.75 vs 0) = ln 4, by 0.75^2.
    positive = 0.09 * math.log(2) + 0.5625 * math.log(4)
    background = 0.5625 * math.log(4) + 0.25 * math.log(2)
    assert loss.tolist() == pytest.approx([positive, background], rel=1e-5)
    mean = QualityFocalLoss(loss_weight=2.0)(logits, (labels, scores), avg_factor=0.5)
    assert float(mean) == pytest.approx(2.0 * (positive + background) / 0.5, rel=1e-5)


def test_giou_of_known_boxes():
    pred = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1]])
    target = torch.tensor([[0.0, 0, 2, 2], [1, 1, 3, 3], [2, 0, 3, 1]])
    # identical; IoU 1/7 inside a 3x3 enclosing box with union 7; disjoint: 0 - (3 - 2) / 3
    expected = [1.0, 1 / 7 - 2 / 9, -1 / 3]
    assert generalized_iou(pred, target).tolist() == pytest.approx(expected, rel=1e-5)
    loss = GIoULoss(loss_weight=2.0)(pred, target, torch.tensor([1.0, 0.0, 0.5]), avg_factor=1.0)
    assert float(loss) == pytest.approx(2.0 * (0.0 + 0.5 * (4 / 3)), rel=1e-5)


def _priors(points, stride=8.0):
    return torch.tensor([[x, y, stride, stride] for x, y in points], dtype=torch.float32)


def test_assigner_picks_the_prior_with_the_right_box_and_class():
    gt = torch.tensor([[20.0, 20, 60, 60]])
    priors = _priors([(40, 40), (48, 48), (24, 56), (100, 100)])
    boxes = torch.tensor(
        [[20.0, 20, 60, 60], [40, 40, 60, 60], [10, 40, 30, 70], [90, 90, 110, 110]]
    )
    logits = torch.full((4, 3), -4.0)
    logits[0, 1] = 2.0  # confident in the right class
    result = DynamicSoftLabelAssigner().assign(logits, boxes, priors, gt, torch.tensor([1]))
    # dynamic k = int(1.0 + 0.25 + 0.1) = 1: only the exact box; the far prior is outside the gt
    assert result.gt_inds.tolist() == [0, -1, -1, -1]
    assert result.labels.tolist() == [1, 3, 3, 3]
    assert result.ious.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])


def test_assigner_dynamic_k_and_conflicts():
    gts = torch.tensor([[0.0, 0, 40, 40], [20, 0, 60, 40]])
    # three priors inside gt 0 only, each predicting gt 0's box; one prior in both gts, whose box
    # is gt 1's (so it is cheaper for gt 1)
    priors = _priors([(8, 8), (16, 16), (8, 24), (30, 20)])
    boxes = torch.tensor([[0.0, 0, 40, 40]] * 3 + [[20.0, 0, 60, 40]])
    logits = torch.zeros(4, 2)
    result = DynamicSoftLabelAssigner().assign(logits, boxes, priors, gts, torch.tensor([0, 1]))
    # gt 0: k = int(1 + 1 + 1 + 1/3) = 3 of its four candidates; gt 1: k = int(1 + 1/3 * 3) = 2,
    # but its only good prior is the shared one; it keeps that one plus the next cheapest, which
    # gt 0 has claimed with a lower cost, so gt 0 keeps it.
    assert result.gt_inds[3] == 1
    assert result.gt_inds[:3].tolist().count(0) == 3
    assert result.labels.tolist() == [0, 0, 0, 1]


def test_assigner_without_gt_or_candidates_is_all_background():
    assigner = DynamicSoftLabelAssigner()
    priors = _priors([(0, 0), (8, 8)])
    boxes = torch.tensor([[0.0, 0, 4, 4], [4, 4, 12, 12]])
    empty = assigner.assign(torch.zeros(2, 2), boxes, priors, torch.zeros(0, 4), torch.zeros(0))
    assert empty.gt_inds.tolist() == [-1, -1] and empty.labels.tolist() == [2, 2]
    away = assigner.assign(
        torch.zeros(2, 2), boxes, priors, torch.tensor([[50.0, 50, 60, 60]]), torch.tensor([0])
    )
    assert away.gt_inds.tolist() == [-1, -1]


def test_pad_to_stride_pads_bottom_right_only():
    img = torch.ones(1, 3, 40, 70)
    padded = pad_to_stride(img, 32)
    assert padded.shape[-2:] == (64, 96)
    assert padded[..., :40, :70].eq(1).all() and padded[..., 40:, :].eq(0).all()


def _best_ious(model, batch) -> list[float]:
    """Per image, the best IoU of any predicted box with its gt."""
    head = model.bbox_head
    with torch.no_grad():
        cls_scores, bbox_preds = head(model.extract_feat(batch['img']))
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        priors = torch.cat(head.prior_generator.grid_priors(sizes))
        deltas = torch.cat([head.flatten_level(b, 4) for b in bbox_preds], 1)
        boxes = head.bbox_coder.decode(priors, deltas)
    return [float(bbox_overlaps(b, g).max()) for b, g in zip(boxes, batch['gt_bboxes'])]


def test_rtmdet_training_steps_fit_the_boxes():
    """Eight steps on one batch: losses finite and positive, predicted boxes closer to the gts
    (the loss itself is normalised by the positives' IoUs, so it rises as they grow)."""
    torch.manual_seed(0)
    cfg = load_config(
        str(BUNDLED_RTMDET),
        {
            'model.backbone.widen_factor': 0.125,
            'model.neck.in_channels': [32, 64, 128],
            'model.neck.out_channels': 32,
            'model.bbox_head.in_channels': 32,
            'model.bbox_head.feat_channels': 32,
        },
    )
    model = build_train_model(cfg)
    batch = dict(
        img=torch.randn(2, 3, 96, 128),
        img_metas=[dict(img_shape=(96, 128), pad_shape=(96, 128))] * 2,
        gt_bboxes=[torch.tensor([[10.0, 10, 50, 60]]), torch.tensor([[40.0, 5, 95, 45]])],
        gt_labels=[torch.tensor([0]), torch.tensor([3])],
    )
    before = _best_ious(model, batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.002)
    for _ in range(8):
        losses = train_step(model, batch, optimizer)
        assert set(losses) == {'loss_cls', 'loss_bbox', 'loss'}
        assert all(math.isfinite(v) and v > 0 for v in losses.values())
    after = _best_ious(model, batch)
    # from near-empty boxes (the regression starts at N(0, 0.01)) to a fitted one
    assert max(before) < 0.1 and max(after) > 0.5, (before, after)


def test_bundled_rtmdet_finds_the_demo_shapes():
    """The shipped checkpoint (a few MB, read by the restricted loader) finds the demo image's
    three clearest shapes, as the bundled RetinaNet does (its boxes above 0.8)."""
    from deploy.api import Detector

    checkpoint = ROOT / 'checkpoints' / 'rtmdet_tiny_synthetic.pth'
    assert checkpoint.stat().st_size < 8e6
    detector = Detector(str(checkpoint), str(BUNDLED_RTMDET), logger=None)
    found = detector(str(ROOT / 'demo' / 'demo.jpg')).above(0.3)
    expected = [('square', [0, 337, 109, 442]), ('star', [136, 32, 298, 201])]
    expected.append(('star', [135, 302, 192, 356]))
    boxes = torch.as_tensor(found.boxes, dtype=torch.float32).reshape(-1, 4)
    for name, box in expected:
        ious = bbox_overlaps(torch.tensor([box], dtype=torch.float32), boxes)[0]
        same = torch.tensor([n == name for n in found.names], dtype=torch.bool)
        assert bool(((ious >= 0.7) & same).any()), (name, box, found.names, boxes)
