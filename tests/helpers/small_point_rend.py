"""PointRend shrunk for tests: the config overrides, the model, caffe-scale inputs."""

import torch
from conftest import ROOT, random_batch

from deploy.apis.model import init_detector
from deploy.datasets.synthetic import CATEGORIES
from deploy.models.random_weights import PIXEL_STD, make_detections_likely

CONFIG = ROOT / 'configs' / 'point_rend' / 'point_rend_r50_caffe_fpn_mstrain_1x_coco.py'


def small_options(roi_mode: str = 'masked') -> dict:
    """cfg overrides: R18 at 1/4 width, 32-channel FPN and heads, the generated data set's classes
    (the point head's cost grows with them), 100 proposals per image, and 3 subdivision steps
    (the 14 x 14 one skipped, every point of 28 x 28, 784 of 56 x 56)."""
    options = {
        'model.backbone.depth': 18,
        'model.backbone.base_channels': 16,
        'model.neck.in_channels': [16, 32, 64, 128],
        'model.neck.out_channels': 32,
        'model.rpn_head.in_channels': 32,
        'model.rpn_head.feat_channels': 32,
        'model.test_cfg.rpn.nms_pre': 200,
        'model.test_cfg.rpn.max_per_img': 100,
        'model.roi_head.bbox_roi_extractor.out_channels': 32,
        'model.roi_head.bbox_roi_extractor.deploy_mode': roi_mode,
        'model.roi_head.bbox_head.in_channels': 32,
        'model.roi_head.bbox_head.fc_out_channels': 64,
        'model.roi_head.mask_roi_extractor.out_channels': 32,
        'model.roi_head.mask_head.in_channels': 32,
        'model.roi_head.mask_head.conv_out_channels': 32,
        'model.roi_head.mask_head.fc_out_channels': 64,
        'model.roi_head.point_head.in_channels': 32,
        'model.roi_head.point_head.fc_channels': 32,
        'model.test_cfg.rcnn.subdivision_steps': 3,
        # The random 6-class heads score 0.1-0.27: keep some detections, not max_per_img.
        'model.test_cfg.rcnn.score_thr': 0.12,
    }
    for head in ('bbox_head', 'mask_head', 'point_head'):
        options[f'model.roi_head.{head}.num_classes'] = len(CATEGORIES)
    return options


def build_small(roi_mode: str = 'masked', seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model, cfg = init_detector(str(CONFIG), cfg_options=dict(small_options(roi_mode), **overrides))
    make_detections_likely(model)
    return model, cfg


def pixel_batch(shapes, seed: int = 0):
    """:func:`random_batch` at the scale of caffe-style inputs (mean-subtracted pixels, std 1)."""
    img, metas = random_batch(shapes, seed=seed)
    return img * PIXEL_STD, metas
