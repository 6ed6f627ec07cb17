"""Training of the MobileNetV2 classifier: random crops, the loss, the LR schedule and the loop
(from scratch, resumable, MMClassification-format checkpoints)."""

import math

import numpy as np
import pytest
import torch
from conftest import ROOT

from deploy.config import load_config
from deploy.datasets.synthetic_classification import (
    CLASS_NAMES,
    generate_synthetic_classification,
)
from deploy.errors import ConfigError
from deploy.training.classification import (
    RandomResizedCrop,
    build_train_steps,
    classification_loss,
)
from deploy.training.loop import train
from deploy.training.optim import LrSchedule

BUNDLED = ROOT / 'configs' / 'bundled' / 'mobilenet_v2_tiny_synthetic.py'


def test_random_resized_crop_boxes():
    crop = RandomResizedCrop(size=(32, 32), scale=(0.2, 0.6), ratio=(0.5, 2.0))
    gen = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = crop.box(60, 90, gen)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 90
        assert 0.2 * 5400 * 0.8 <= h * w <= 0.6 * 5400 * 1.2  # area fraction (after rounding)
        assert 0.45 <= w / h <= 2.2
    # no attempt fits a 4:1 image with ratios in [3/4, 4/3]: the centre crop of ratio 4/3
    never = RandomResizedCrop(size=(8, 8), scale=(1.0, 1.0), max_attempts=3)
    assert never.box(20, 80, gen) == (0, 26, 20, 27)  # w = round(20 * 4 / 3), (80 - 27) // 2
    out = crop(np.zeros((60, 90, 3), np.uint8), gen)
    assert out.shape == (32, 32, 3)


def test_train_pipeline_of_the_bundled_config():
    cfg = load_config(BUNDLED)
    steps = build_train_steps(cfg.data.train.pipeline, cfg)
    assert [type(s).__name__ for s in steps] == ['RandomResizedCrop', 'RandomFlip']
    assert steps[0].size == (64, 64) and steps[0].scale == (0.6, 1.0)
    assert steps[0].backend == 'pillow' and steps[1].prob == 0.5
    with pytest.raises(ConfigError, match='AutoAugment'):
        build_train_steps([dict(type='AutoAugment', policies=[])], cfg)


def test_losses_and_int_step_schedule():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    head = type('Head', (), {})()
    head.loss_cfg = dict(type='CrossEntropyLoss', loss_weight=2.0)
    expected = -(logits.log_softmax(1)[[0, 1], [0, 2]]).mean() * 2
    torch.testing.assert_close(classification_loss(head, logits, labels), expected)
    head.loss_cfg = dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    smooth = 0.9 * torch.nn.functional.one_hot(labels, 3) + 0.1 / 3
    expected = -(smooth * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(classification_loss(head, logits, labels), expected)
    head.loss_cfg = dict(type='FocalLoss')
    with pytest.raises(ConfigError, match='FocalLoss'):
        classification_loss(head, logits, labels)
    # MMClassification's MobileNetV2 schedule: step=1 multiplies by gamma every epoch
    schedule = LrSchedule(dict(policy='step', gamma=0.98, step=1), 0.045, 300, 10)
    assert [schedule(e, e * 10) for e in (0, 1, 5)] == pytest.approx(
        [0.045, 0.045 * 0.98, 0.045 * 0.98**5]
    )


def test_train_loop_from_scratch_and_resume(tmp_path):
    data = generate_synthetic_classification(tmp_path / 'data', num_train=24, num_val=0, seed=4)
    options = {
        'model.backbone.widen_factor': 0.25,
        'data.samples_per_gpu': 8,
        'data.workers_per_gpu': 0,
        'data.train.data_prefix': str(data['train_img_prefix']),
        'data.train.ann_file': str(data['train']),
        'data.train.pipeline.1.size': 32,
        'runner.max_epochs': 2,
        'lr_config.warmup_iters': 2,
    }
    cfg = load_config(BUNDLED, options)
    full = train(cfg, tmp_path / 'full', seed=3, progress=False, logger=None)
    assert len(full.epoch_losses) == 2 and full.class_names == CLASS_NAMES
    assert all(math.isfinite(e['loss']) and 0 <= e['acc'] <= 100 for e in full.epoch_losses)
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
    from deploy.apis.model import init_detector

    model, _ = init_detector(cfg, tmp_path / 'full' / 'latest.pth', logger=None)
    assert model.class_names == CLASS_NAMES
