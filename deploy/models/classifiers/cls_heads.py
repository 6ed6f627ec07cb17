"""Classification heads (MMPretrain's ``ClsHead`` and ``LinearClsHead``; MMClassification 0.x
builds the same modules, so ``head.fc.weight`` / ``head.fc.bias`` load from either)."""

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS

_DEFAULT_LOSS = {'type': 'CrossEntropyLoss', 'loss_weight': 1.0}


@MODELS.register_module()
class ClsHead(nn.Module):
    """A head without layers: the last feature of the neck *is* the class score.

    Args:
        loss: the training loss config (read by :mod:`deploy.training.classification`).
        topk: the top-k accuracies to report (an int or a tuple), e.g. ``(1, 5)``.
        cal_acc: MMPretrain computes the accuracy while training; accepted and ignored.
        init_cfg: accepted and ignored (weights come from the checkpoint).
    """

    def __init__(
        self,
        loss: Mapping = _DEFAULT_LOSS,
        topk: int | Sequence[int] = (1,),
        cal_acc: bool = False,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        self.loss_cfg = dict(loss)
        self.topk = (int(topk),) if isinstance(topk, int) else tuple(int(k) for k in topk)
        if not self.topk or min(self.topk) < 1:
            raise ConfigError(f'head.topk must be positive integers, got {topk!r}')

    def pre_logits(self, feats: Tensor | tuple[Tensor, ...]) -> Tensor:
        """The last stage's features ``[B, C]`` (the neck may return one per backbone output)."""
        return feats[-1] if isinstance(feats, tuple) else feats

    def forward(self, feats: Tensor | tuple[Tensor, ...]) -> Tensor:
        """Class logits ``[B, num_classes]``."""
        return self.pre_logits(feats)

    def predict(self, feats: Tensor | tuple[Tensor, ...]) -> Tensor:
        """Class probabilities ``[B, num_classes]``: the softmax of the logits (MMPretrain's
        ``pred_score``; MMClassification 0.x's ``simple_test`` with ``softmax=True``)."""
        return F.softmax(self(feats), dim=1)


@MODELS.register_module()
class LinearClsHead(ClsHead):
    """One fully connected layer ``fc``: ``[B, in_channels]`` -> logits ``[B, num_classes]``.

    Args:
        num_classes: classes, without background.
        in_channels: feature channels (1280 after MobileNetV2 + global average pooling).
        loss, topk, cal_acc, init_cfg: see :class:`ClsHead`.
    """

    def __init__(self, num_classes: int, in_channels: int, **kwargs):
        super().__init__(**kwargs)
        if num_classes <= 0:
            raise ConfigError(f'head.num_classes must be positive, got {num_classes}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.fc = nn.Linear(in_channels, num_classes)
        # MMPretrain's init_cfg: Normal(std=0.01) on the Linear layer, zero bias.
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feats: Tensor | tuple[Tensor, ...]) -> Tensor:
        return self.fc(self.pre_logits(feats))
