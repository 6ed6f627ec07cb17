"""DINO shrunk for tests: the overrides, the model, batch inputs."""

import numpy as np
import torch
from conftest import ROOT

from deploy.apis.model import init_detector
from deploy.models.detectors.dino import DINO
from deploy.models.random_weights import make_detections_likely

DINO_CFG = ROOT / 'configs' / 'dino' / 'dino-4scale_r50_8xb2-12e_coco.py'
NUM_CLASSES = 6

_MSDA = dict(embed_dims=32, num_heads=4, num_levels=4, num_points=2)
_FFN = dict(embed_dims=32, feedforward_channels=64)
#: the R50 config shrunk: R18 at a quarter width, 32 dims, 1 + 2 layers, 30 queries
SMALL_DINO = {
    'model.backbone.depth': 18,
    'model.backbone.base_channels': 16,
    'model.neck.in_channels': [32, 64, 128],
    'model.neck.out_channels': 32,
    'model.neck.norm_cfg.num_groups': 8,
    'model.num_queries': 30,
    'model.encoder.num_layers': 1,
    'model.encoder.layer_cfg': dict(self_attn_cfg=_MSDA, ffn_cfg=_FFN),
    'model.decoder.num_layers': 2,
    'model.decoder.layer_cfg': dict(
        self_attn_cfg=dict(embed_dims=32, num_heads=4), cross_attn_cfg=_MSDA, ffn_cfg=_FFN
    ),
    'model.positional_encoding.num_feats': 16,
    'model.bbox_head.num_classes': NUM_CLASSES,
    'model.bbox_head.embed_dims': 32,
    'model.test_cfg.max_per_img': 20,
}
BATCH_INVARIANT = {'model.test_cfg.batch_invariant': True}


def build_small_dino(seed: int = 0, **options) -> DINO:
    """The small DINO with random weights that detect (``make_detections_likely``)."""
    torch.manual_seed(seed)
    model, _ = init_detector(str(DINO_CFG), cfg_options={**SMALL_DINO, **options}, logger=None)
    return make_detections_likely(model)


def batch_inputs(img, metas):
    shapes = np.asarray([m['img_shape'][:2] for m in metas], np.float32)
    return dict(input=img.numpy(), img_shape=shapes)
