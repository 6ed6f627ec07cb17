"""Faster / Mask / Cascade R-CNN shrunk for tests: the configs, their overrides, the model."""

import torch
from conftest import ROOT

from deploy.apis.model import init_detector
from deploy.models.random_weights import make_detections_likely

CONFIGS = {
    'faster_rcnn_r50_fpn_1x_coco': 'configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py',
    'mask_rcnn_r50_fpn_1x_coco': 'configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py',
    'cascade_rcnn_r50_fpn_1x_coco': 'configs/cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.py',
    'cascade_mask_rcnn_r50_fpn_1x_coco': (
        'configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.py'
    ),
}


def small_options(stem: str, roi_mode: str = 'masked') -> dict:
    """cfg overrides: R18 at 1/4 width, a 32-channel FPN and heads, 100 proposals per image."""
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
    }
    cascade = stem.startswith('cascade')
    for head in (
        [f'model.roi_head.bbox_head.{i}' for i in range(3)]
        if cascade
        else ['model.roi_head.bbox_head']
    ):
        options[f'{head}.in_channels'] = 32
        options[f'{head}.fc_out_channels'] = 64
    if 'mask' in stem:
        options.update(
            {
                'model.roi_head.mask_roi_extractor.out_channels': 32,
                'model.roi_head.mask_roi_extractor.deploy_mode': roi_mode,
                'model.roi_head.mask_head.in_channels': 32,
                'model.roi_head.mask_head.conv_out_channels': 32,
            }
        )
    return options


def build_small(stem: str, roi_mode: str = 'masked', seed: int = 0):
    torch.manual_seed(seed)
    model, cfg = init_detector(str(ROOT / CONFIGS[stem]), cfg_options=small_options(stem, roi_mode))
    make_detections_likely(model)
    return model, cfg
