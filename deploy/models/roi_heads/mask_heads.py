"""Mask head of Mask R-CNN (MMDetection's ``FCNMaskHead``): convs, x2 upsampling, class logits."""

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule


@MODELS.register_module()
class FCNMaskHead(nn.Module):
    """Children ``convs.{i}`` (ConvModule), ``upsample`` (ConvTranspose2d for ``'deconv'``) and
    ``conv_logits``, as in MMDetection.

    Args:
        num_convs, roi_feat_size, in_channels, conv_kernel_size, conv_out_channels: the conv tower.
        num_classes: mask classes (one logit map each unless ``class_agnostic``).
        class_agnostic: a single mask per RoI.
        upsample_cfg: ``dict(type='deconv' | 'nearest' | 'bilinear' | None, scale_factor=2)``.
        conv_cfg, norm_cfg: of the tower convs.
        predictor_cfg, loss_mask, init_cfg: accepted for config compatibility.
    """

    def __init__(
        self,
        num_convs: int = 4,
        roi_feat_size: int = 14,
        in_channels: int = 256,
        conv_kernel_size: int = 3,
        conv_out_channels: int = 256,
        num_classes: int = 80,
        class_agnostic: bool = False,
        upsample_cfg: dict | None = None,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        predictor_cfg: dict | None = None,
        loss_mask: dict | None = None,
        init_cfg=None,
    ):
        super().__init__()
        upsample_cfg = dict(upsample_cfg or dict(type='deconv', scale_factor=2))
        self.upsample_method = upsample_cfg.get('type')
        self.scale_factor = upsample_cfg.get('scale_factor', 2)
        if self.upsample_method not in (None, 'deconv', 'nearest', 'bilinear'):
            raise ConfigError(
                f'FCNMaskHead upsample type {self.upsample_method!r} is not '
                'supported (deconv, nearest, bilinear or None)'
            )
        self.num_classes = num_classes
        self.class_agnostic = class_agnostic
        self.roi_feat_size = roi_feat_size
        padding = (conv_kernel_size - 1) // 2
        self.convs = nn.ModuleList(
            ConvModule(
                in_channels if i == 0 else conv_out_channels,
                conv_out_channels,
                conv_kernel_size,
                padding=padding,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
            )
            for i in range(num_convs)
        )
        upsample_in = conv_out_channels if num_convs > 0 else in_channels
        if self.upsample_method == 'deconv':
            self.upsample = nn.ConvTranspose2d(
                upsample_in, conv_out_channels, self.scale_factor, stride=self.scale_factor
            )
            logits_in = conv_out_channels
        elif self.upsample_method is None:
            self.upsample = None
            logits_in = upsample_in
        else:
            align = None if self.upsample_method == 'nearest' else False
            self.upsample = nn.Upsample(
                scale_factor=self.scale_factor, mode=self.upsample_method, align_corners=align
            )
            logits_in = upsample_in
        self.conv_logits = nn.Conv2d(logits_in, 1 if class_agnostic else num_classes, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """``[K, C, 14, 14]`` RoI features -> mask logits ``[K, classes, 28, 28]``."""
        for conv in self.convs:
            x = conv(x)
        if self.upsample is not None:
            x = self.upsample(x)
            if self.upsample_method == 'deconv':
                x = self.relu(x)
        return self.conv_logits(x)

    def class_probs(self, mask_logits: Tensor, labels: Tensor) -> Tensor:
        """Sigmoid of each RoI's own class map: ``[K, classes, m, m]``, ``labels [K]`` ->
        ``[K, m, m]`` probabilities (labels < 0, i.e. padding rows, read class 0)."""
        if self.class_agnostic:
            return mask_logits[:, 0].sigmoid()
        index = labels.clamp(min=0).reshape(-1, 1, 1, 1).expand(-1, 1, *mask_logits.shape[2:])
        return torch.gather(mask_logits, 1, index)[:, 0].sigmoid()
