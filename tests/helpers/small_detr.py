"""DETR shrunk for tests: the overrides, the model, a backbone blind to padding, batch inputs."""

import numpy as np
import torch
from conftest import ROOT
from torch import nn

from deploy.apis.model import init_detector
from deploy.models.random_weights import make_detections_likely
from deploy.registry import MODELS

DETR_CFG = ROOT / 'configs' / 'detr' / 'detr_r50_8x2_150e_coco.py'
#: six classes, as the generated data set has
NUM_CLASSES = 6
_ATTN = dict(type='MultiheadAttention', embed_dims=32, num_heads=4, dropout=0.1)
#: DETR R50 shrunk to R18 at 1/4 width, a 32-d transformer with 1 encoder and 2 decoder layers and
#: 20 queries (of which the best 10 are kept): the same code paths in a fraction of the time
SMALL_DETR = {
    'model.backbone.depth': 18,
    'model.backbone.base_channels': 16,
    'model.bbox_head.in_channels': 128,
    'model.bbox_head.num_classes': NUM_CLASSES,
    'model.bbox_head.num_query': 20,
    'model.bbox_head.transformer.encoder.num_layers': 1,
    'model.bbox_head.transformer.encoder.transformerlayers.attn_cfgs': [_ATTN],
    'model.bbox_head.transformer.encoder.transformerlayers.feedforward_channels': 64,
    'model.bbox_head.transformer.decoder.num_layers': 2,
    'model.bbox_head.transformer.decoder.transformerlayers.attn_cfgs': _ATTN,
    'model.bbox_head.transformer.decoder.transformerlayers.feedforward_channels': 64,
    'model.bbox_head.positional_encoding.num_feats': 16,
    'model.test_cfg.max_per_img': 10,
}


def build_small(seed: int = 0, likely: bool = True, **options):
    """The small DETR with random weights that detect (``make_detections_likely``)."""
    torch.manual_seed(seed)
    model, _ = init_detector(str(DETR_CFG), cfg_options={**SMALL_DETR, **options}, logger=None)
    return make_detections_likely(model) if likely else model


@MODELS.register_module(name='DetrTestPatchBackbone', force=True)
class PatchBackbone(nn.Module):
    """Test double of a backbone that cannot see padding: a linear map of each non-overlapping
    32 x 32 patch (``[B, 3, H, W] -> ([B, C, H / 32, W / 32],)``). With inputs padded to
    multiples of 32, an image's features inside a padded batch are exactly those of the image
    alone, so everything after the backbone must be too. (ResNet-style backbones are not: their
    overlapping windows see the padding, see ``deploy/models/detectors/detr.py``.) Accepts and
    ignores the ResNet keys of the config it replaces."""

    def __init__(self, out_channels: int = 128, **_resnet_keys):
        super().__init__()
        self.proj = nn.Conv2d(3, out_channels, 32, stride=32)
        nn.init.normal_(self.proj.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.proj(x),)


#: SMALL_DETR on PatchBackbone, with inputs padded to multiples of 32
PATCH_DETR = {
    'model.backbone.type': 'DetrTestPatchBackbone',
    'data.test.pipeline.1.transforms.3.size_divisor': 32,
}


#: SMALL_DETR with each image of a batch blind to the padding around it (not MMDetection's), on
#: a narrow ResNet-50: Bottleneck blocks, 1 x 1 downsampling right after the max-pooling
BATCH_INVARIANT = {
    'model.test_cfg.batch_invariant': True,
    'model.backbone.depth': 50,
    'model.backbone.base_channels': 8,
    'model.bbox_head.in_channels': 256,
}


def batch_inputs(img, metas):
    shapes = np.asarray([m['img_shape'][:2] for m in metas], np.float32)
    return dict(input=img.numpy(), img_shape=shapes)
