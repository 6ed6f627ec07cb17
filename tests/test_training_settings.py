"""Typed training settings: every bad value is one ConfigError that names its key, caught where
the job reads the config (before the first step), and the typed values are the config's."""

from pathlib import Path

import pytest
import torch

from deploy.config import load_config
from deploy.errors import ConfigError
from deploy.settings import parse_settings
from deploy.training.data import get_train_transform_cfg, train_data_settings
from deploy.training.engine import TrainOptions
from deploy.training.head_losses import detector_loss
from deploy.training.loop import build_train_model
from deploy.training.settings import (
    AssignerSettings,
    SamplerSettings,
    TwoStageTrainSettings,
    schedule_settings,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_RETINANET = ROOT / 'configs' / 'bundled' / 'retinanet_r18_tiny_synthetic.py'

#: the bundled RetinaNet shrunk to build in a blink (as in test_training.py)
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


def _tiny_batch() -> dict:
    return dict(
        img=torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)),
        img_metas=[dict(img_shape=(64, 96), pad_shape=(64, 96))],
        gt_bboxes=[torch.tensor([[10.0, 10, 40, 50]])],
        gt_labels=[torch.tensor([0])],
    )


def _read_everything(cfg) -> None:
    """What a training run reads from the config, in its order."""
    train_data_settings(cfg)
    get_train_transform_cfg(cfg)
    schedule_settings(cfg)
    model = build_train_model(cfg, logger=None)
    with torch.no_grad():
        detector_loss(model, _tiny_batch())


BAD = {
    'batch size': ('data.samples_per_gpu', 'four', 'data.samples_per_gpu must be an integer'),
    'data set path': ('data.train.ann_file', 3, 'data.train.ann_file must be a string'),
    'class names': ('data.train.classes', 'a.txt', 'data.train.classes must be a list'),
    'flip ratio': ('data.train.pipeline.3.flip_ratio', 'often', 'pipeline[3].flip_ratio'),
    'resize scale': ('data.train.pipeline.2.img_scale', 800, 'pipeline[2].img_scale'),
    'epochs': ('runner.max_epochs', 'many', 'runner.max_epochs must be an integer'),
    'runner key': ('runner.max_epoch', 3, 'did you mean `max_epochs`'),
    'assigner value': (
        'model.train_cfg.assigner.pos_iou_thr',
        'high',
        'model.train_cfg.assigner.pos_iou_thr must be a number',
    ),
    'assigner key': ('model.train_cfg.assigner.pos_iou', 0.5, 'did you mean `pos_iou_thr`'),
    'assigner type': (
        'model.train_cfg.assigner.type',
        'ATSSAssigner',
        "unsupported assigner 'ATSSAssigner'",
    ),
    'sampler type': (
        'model.train_cfg.sampler',
        {'type': 'OHEMSampler'},
        "unsupported sampler 'OHEMSampler'",
    ),
    'train_cfg key': ('model.train_cfg.neg_pos_ratio', 3, '`model.train_cfg.neg_pos_ratio`'),
    'pretrained path': (
        'model.backbone.init_cfg',
        {'_delete_': True, 'type': 'Pretrained', 'checkpoint': 3},
        'model.backbone.init_cfg.checkpoint must be a string',
    ),
}


@pytest.mark.parametrize('name', sorted(BAD))
def test_a_bad_training_setting_is_one_error_naming_its_key(name):
    key, value, needle = BAD[name]
    cfg = load_config(str(BUNDLED_RETINANET), dict(TINY, **{key: value}))
    with pytest.raises(ConfigError) as info:
        _read_everything(cfg)
    message = str(info.value)
    assert needle in message and '\n' not in message


def test_typed_settings_hold_the_config_values():
    cfg = load_config(str(BUNDLED_RETINANET), TINY)
    data = train_data_settings(cfg)
    assert data.batch_size == 2 and data.num_workers == 0
    assert data.ann_file.endswith('annotations/instances_train2017.json')
    assert data.classes == ('circle', 'square', 'triangle', 'star', 'ring', 'cross')
    schedule = schedule_settings(cfg)
    assert schedule.epochs == 2 and schedule.base_lr == 0.001
    assert schedule.grad_clip.max_norm == 10.0 and schedule.lr.warmup_iters == 2
    faster = load_config(str(ROOT / 'configs' / 'bundled' / 'mask_rcnn_r18_tiny_synthetic.py'))
    two_stage = parse_settings(TwoStageTrainSettings, faster.model.train_cfg, 'model.train_cfg')
    assert two_stage.rpn.assigner == AssignerSettings(
        pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, match_low_quality=True
    )
    assert two_stage.rcnn.sampler == SamplerSettings(
        type='RandomSampler', num=128, pos_fraction=0.25, add_gt_as_proposals=True
    )
    assert two_stage.rpn_proposal.max_per_img == 300
    assert two_stage.rpn_proposal.nms.iou_threshold == 0.7


def test_a_two_stage_train_cfg_needs_its_stages():
    with pytest.raises(ConfigError, match=r'model\.train_cfg\.rpn_proposal is needed'):
        parse_settings(
            TwoStageTrainSettings,
            {'rpn': {'assigner': {'pos_iou_thr': 0.7, 'neg_iou_thr': 0.3}}, 'rcnn': None},
            'model.train_cfg',
        )


@pytest.mark.parametrize(
    'changes, needle',
    [
        ({'epochs': 0}, '--epochs must be at least 1'),
        ({'num_workers': -1}, '--workers must be at least 0'),
        ({'threads': 0}, '--threads must be at least 1'),
    ],
)
def test_train_options_check_their_flags(changes, needle):
    assert TrainOptions('work', epochs=1, num_workers=0, threads=1).epochs == 1
    with pytest.raises(ConfigError, match=needle):
        TrainOptions('work', **changes)


@pytest.mark.parametrize('prefix', [{'img': 'train2017/'}, 'train2017/'])
def test_a_3x_training_set(prefix):
    from mmengine.config import Config

    dataset = {
        'type': 'RepeatDataset',
        'times': 2,
        'dataset': {
            'data_root': 'data/coco/',
            'ann_file': 'annotations/train.json',
            'data_prefix': prefix,
            'metainfo': {'classes': ('a', 'b'), 'palette': [(0, 0, 0)]},
            'filter_cfg': {'filter_empty_gt': True},
            'pipeline': [{'type': 'Resize', 'scale': (640, 480), 'keep_ratio': True}],
        },
    }
    cfg = Config({'train_dataloader': {'batch_size': 3, 'sampler': {}, 'dataset': dataset}})
    data = train_data_settings(cfg)
    assert data.ann_file == 'data/coco/annotations/train.json'
    assert data.img_prefix == 'data/coco/train2017/' and data.classes == ('a', 'b')
    assert (data.batch_size, data.num_workers) == (3, 2) and len(data.pipeline) == 1


BUNDLED_RTMDET = ROOT / 'configs' / 'bundled' / 'rtmdet_tiny_synthetic.py'


@pytest.mark.parametrize(
    'key, value, needle',
    [
        ('model.train_cfg.assigner.topk', 0, '`model.train_cfg.assigner.topk` must be at least 1'),
        ('model.train_cfg.assigner.type', 'ATSSAssigner', "unsupported assigner 'ATSSAssigner'"),
        ('model.train_cfg.assigner.top_k', 9, 'did you mean `topk`'),
    ],
)
def test_a_bad_rtmdet_train_cfg_is_one_error(key, value, needle):
    cfg = load_config(str(BUNDLED_RTMDET), {key: value})
    model = build_train_model(cfg, logger=None)
    with pytest.raises(ConfigError) as info, torch.no_grad():
        detector_loss(model, _tiny_batch())
    assert needle in str(info.value) and '\n' not in str(info.value)
