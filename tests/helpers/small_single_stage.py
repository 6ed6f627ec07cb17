"""FCOS, FSAF, SSD300 and YOLOv3 shrunk for tests: configs, overrides, batch shapes, the model."""

import numpy as np
import torch
from conftest import ROOT

from deploy.apis.model import init_detector
from deploy.models.random_weights import make_detections_likely

#: MMDetection 2.x config stem -> our config
CONFIGS = {
    'fcos_r50_caffe_fpn_gn-head_4x4_1x_coco': (
        'configs/fcos/fcos_r50_caffe_fpn_gn-head_4x4_1x_coco.py'
    ),
    'fsaf_r50_fpn_1x_coco': 'configs/fsaf/fsaf_r50_fpn_1x_coco.py',
    'ssd300_coco': 'configs/ssd/ssd300_coco.py',
    'yolov3_d53_mstrain-608_273e_coco': 'configs/yolo/yolov3_d53_mstrain-608_273e_coco.py',
}
MODELS = ('fcos', 'fsaf', 'ssd', 'yolo')
STEMS = dict(zip(MODELS, CONFIGS))
#: six classes, as the generated data set has: cheaper NMS, and the eval test can use them
NUM_CLASSES = 6

_RESNET18_FPN = {
    'model.backbone.depth': 18,
    'model.backbone.base_channels': 16,
    'model.neck.in_channels': [16, 32, 64, 128],
    'model.neck.out_channels': 32,
    'model.bbox_head.in_channels': 32,
    'model.bbox_head.feat_channels': 32,
    'model.bbox_head.stacked_convs': 2,
}
_SMALL = {
    # same code paths as the R50 models, a fraction of the time
    'fcos': {
        **_RESNET18_FPN,
        'model.bbox_head.norm_cfg': dict(type='GN', num_groups=8, requires_grad=True),
    },
    'fsaf': dict(_RESNET18_FPN),
    # VGG at 1/4 width (conv4_3 128, fc7 256 channels) and extra levels at 1/4 width
    'ssd': {
        'model.backbone.base_channels': 16,
        'model.neck.in_channels': (128, 256),
        'model.neck.out_channels': (128, 256, 128, 64, 64, 64),
        'model.bbox_head.in_channels': (128, 256, 128, 64, 64, 64),
    },
    # Darknet-53 at 1/4 width (outputs 64, 128, 256 channels), neck and head to match
    'yolo': {
        'model.backbone.base_channels': 8,
        'model.neck.in_channels': [256, 128, 64],
        'model.neck.out_channels': [64, 32, 16],
        'model.bbox_head.in_channels': [64, 32, 16],
        'model.bbox_head.out_channels': [128, 64, 32],
    },
}
#: (h, w) of the real images of a test batch: SSD's test pipeline always gives 300x300
BATCH_SHAPES = {
    'fcos': [(200, 280), (176, 250)],
    'fsaf': [(200, 280), (176, 250)],
    'ssd': [(300, 300), (300, 300)],
    'yolo': [(200, 280), (176, 250)],
}
#: another size (batch 1); SSD needs >= 257 px for its unpadded 3x3 extra levels
OTHER_SHAPE = {'fcos': (150, 220), 'fsaf': (150, 220), 'ssd': (288, 352), 'yolo': (150, 220)}


def config_path(model: str) -> str:
    return str(ROOT / CONFIGS[STEMS[model]])


def small_options(model: str, num_classes: int = NUM_CLASSES) -> dict:
    """cfg overrides that shrink ``model`` ('fcos', 'fsaf', 'ssd', 'yolo') for tests."""
    return {**_SMALL[model], 'model.bbox_head.num_classes': num_classes}


def build_small(model: str, seed: int = 0, **extra) -> torch.nn.Module:
    """A small random-weight ``model`` that detects something."""
    torch.manual_seed(seed)
    detector, _ = init_detector(
        config_path(model), cfg_options={**small_options(model), **extra}, logger=None
    )
    make_detections_likely(detector)
    return detector


def batch_inputs(img: torch.Tensor, metas: list[dict]) -> dict:
    shapes = np.asarray([m['img_shape'] for m in metas], np.float32)
    return dict(input=img.numpy(), img_shape=shapes)
