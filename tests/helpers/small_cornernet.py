"""CornerNet on a tiny HourglassNet for tests: the overrides, the model, random images."""

import numpy as np
import torch
from conftest import ROOT

from deploy.apis.model import init_detector
from deploy.datasets.synthetic import CATEGORIES
from deploy.models.random_weights import make_detections_likely

CONFIG = ROOT / 'configs' / 'cornernet' / 'cornernet_hourglass104_mstest_10x5_210e_coco.py'
#: Hourglass with 2 stacks of depth 2 at 16-24 channels, the generated data set's classes:
#: every code path, little time (the head's 128/256-channel layers are fixed, as in MMDetection)
SMALL_CORNERNET = {
    'model.backbone.downsample_times': 2,
    'model.backbone.stage_channels': [16, 16, 24],
    'model.backbone.stage_blocks': [1, 1, 1],
    'model.backbone.feat_channel': 16,
    'model.bbox_head.in_channels': 16,
    'model.bbox_head.num_classes': len(CATEGORIES),
    'model.test_cfg.corner_topk': 50,
}


def build_small(**options):
    torch.manual_seed(0)
    model, cfg = init_detector(str(CONFIG), cfg_options={**SMALL_CORNERNET, **options})
    return make_detections_likely(model), cfg


def random_images(seed=0, shapes=((60, 50), (40, 140))):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in shapes]
