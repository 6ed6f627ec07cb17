"""MMDetection's initialisation of a detector trained from scratch (its ``init_cfg`` defaults).

The zoo builds modules for loading checkpoints and does not care about initial values; training
from scratch does: backbone convs Kaiming, FPN convs Xavier, head convs ``N(0, 0.01)`` with the
classifier bias set to a foreground prior of 0.01 (focal-loss heads), R-CNN predictors
``N(0, 0.01)`` / ``N(0, 0.001)`` and their shared FCs Xavier.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping

from torch import nn

from ..errors import ConfigError
from ..models.checkpoint import load_checkpoint, load_checkpoint_file
from .engine import TrainLogger
from .settings import PretrainedInit


def bias_init_with_prob(prior_prob: float) -> float:
    """The logit bias whose sigmoid is ``prior_prob``."""
    return float(-math.log((1 - prior_prob) / prior_prob))


def _normal(module: nn.Module, std: float, bias: float = 0.0) -> None:
    nn.init.normal_(module.weight, 0.0, std)
    if module.bias is not None:
        nn.init.constant_(module.bias, bias)


def _xavier(module: nn.Module) -> None:
    nn.init.xavier_uniform_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _kaiming(module: nn.Module) -> None:
    nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _init_dense_head(head: nn.Module, prior_prob: float = 0.01) -> None:
    for module in head.modules():
        if isinstance(module, nn.Conv2d):
            _normal(module, 0.01)
    # Focal-loss (sigmoid) heads start predicting background everywhere, so the many easy
    # negatives do not swamp the first iterations.
    if getattr(head, 'use_sigmoid_cls', False) and type(head).__name__ != 'RPNHead':
        cls_conv = getattr(head, 'retina_cls', None) or getattr(head, 'conv_cls', None)
        if cls_conv is not None:
            nn.init.constant_(cls_conv.bias, bias_init_with_prob(prior_prob))
    for conv in getattr(head, 'rtm_cls', None) or []:  # RTMDet's per-level classifiers
        nn.init.constant_(conv.bias, bias_init_with_prob(prior_prob))


def _init_bbox_head(head: nn.Module) -> None:
    for module in head.modules():
        if isinstance(module, nn.Linear):
            _xavier(module)
        elif isinstance(module, nn.Conv2d):
            _kaiming(module)
    if hasattr(head, 'fc_cls'):
        _normal(head.fc_cls, 0.01)
    if hasattr(head, 'fc_reg'):
        _normal(head.fc_reg, 0.001)


def _init_mask_head(head: nn.Module) -> None:
    for module in head.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            _kaiming(module)


def init_weights(model: nn.Module) -> nn.Module:
    """Initialise a zoo detector in place as MMDetection does without pretrained weights."""
    backbone = getattr(model, 'backbone', None)
    if backbone is not None:
        for module in backbone.modules():
            if isinstance(module, nn.Conv2d):
                _kaiming(module)
        # BatchNorms keep their (1, 0) defaults and ResNet's zero-initialised last norms.
    neck = getattr(model, 'neck', None)
    if neck is not None:
        for module in neck.modules():
            if isinstance(module, nn.Conv2d):
                _xavier(module)
    for name in ('bbox_head', 'rpn_head'):
        if getattr(model, name, None) is not None:
            _init_dense_head(getattr(model, name))
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is not None:
        for heads, init in (
            (roi_head.bbox_head, _init_bbox_head),
            (getattr(roi_head, 'mask_head', None), _init_mask_head),
        ):
            if heads is None:
                continue
            for head in heads if isinstance(heads, nn.ModuleList) else [heads]:
                init(head)
    return model


def load_pretrained(
    model: nn.Module, inits: Mapping[str, PretrainedInit], logger: TrainLogger = print
) -> list[str]:
    """Apply MMDetection's ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` of the
    detector's children (``inits``: by child, from
    :func:`~deploy.training.settings.pretrained_inits`): load the checkpoint's keys under
    ``prefix`` (e.g. ``'backbone.'`` of another detector's checkpoint) into that child.

    Only local files are supported (nothing is downloaded here): a ``torchvision://`` or
    ``open-mmlab://`` checkpoint raises :class:`ConfigError`; set ``init_cfg=None`` to train that
    child from scratch.

    Returns:
        The names of the children that were loaded.
    """
    loaded = []
    for name, init in inits.items():
        source = init.checkpoint
        if not os.path.isfile(source):
            raise ConfigError(
                f'model.{name}.init_cfg asks for pretrained weights from {source!r}, which is not '
                f'a local file; nothing is downloaded here: set model.{name}.init_cfg=None to '
                'train it from scratch'
            )
        state_dict = load_checkpoint_file(source)['state_dict']
        if init.prefix:
            state_dict = OrderedDict(
                (k[len(init.prefix) :], v)
                for k, v in state_dict.items()
                if k.startswith(init.prefix)
            )
            if not state_dict:
                raise ConfigError(f'{source} has no keys under prefix {init.prefix!r}')
        load_checkpoint(getattr(model, name), state_dict, strict=True, logger=logger)
        loaded.append(name)
    return loaded
