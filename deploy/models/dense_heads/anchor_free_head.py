"""Anchor-free dense head (MMDetection's ``AnchorFreeHead``): conv towers, one point per cell."""

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ...spec import DenseSettings
from ..layers import ConvModule
from .base_dense_head import BaseDenseHead


@MODELS.register_module()
class AnchorFreeHead(BaseDenseHead):
    """Class and box towers of 3x3 ConvModules, then ``conv_cls`` and ``conv_reg`` (3x3).

    Children ``cls_convs.{i}``, ``reg_convs.{i}``, ``conv_cls``, ``conv_reg`` as in MMDetection.
    ``_version = 1``: checkpoints written before the head had a version (no ``version`` in the
    state dict's metadata) name the predictors after the model (``fcos_cls``, ``fcos_reg``,
    ``fcos_centerness``); :meth:`_load_from_state_dict` renames them, as MMDetection does.

    Args:
        num_classes: number of object classes (no background).
        in_channels: channels of each input level.
        feat_channels: channels of the tower convs.
        stacked_convs: convs per tower.
        strides: stride of each level (points are ``MlvlPointGenerator(strides)``).
        dcn_on_last_conv: only False is supported.
        conv_bias: bias of the tower convs (``'auto'``: only without norm).
        loss_cls: its ``use_sigmoid`` decides sigmoid (C outputs) or softmax (C + 1); losses are
            used only in training.
        bbox_coder: box coder config (default ``DistancePointBBoxCoder``).
        conv_cfg, norm_cfg: of the tower convs.
        train_cfg, test_cfg: MMDetection's dicts; ``test_cfg`` drives post-processing.
    """

    _version = 1
    raw_output_prefixes = ('cls_score', 'bbox_pred')

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: tuple = (4, 8, 16, 32, 64),
        dcn_on_last_conv: bool = False,
        conv_bias: bool | str = 'auto',
        loss_cls: dict | None = None,
        loss_bbox: dict | None = None,
        bbox_coder: dict | None = None,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        train_cfg: dict | None = None,
        test_cfg: DenseSettings | dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        super().__init__()
        if dcn_on_last_conv:
            raise ConfigError('AnchorFreeHead: dcn_on_last_conv is not supported')
        self.loss_cls_cfg = loss_cls or dict(
            type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0
        )
        self.loss_bbox_cfg = loss_bbox or dict(type='IoULoss', loss_weight=1.0)
        self.num_classes = num_classes
        self.use_sigmoid_cls = self.loss_cls_cfg.get('use_sigmoid', False)
        self.cls_out_channels = num_classes if self.use_sigmoid_cls else num_classes + 1
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.strides = list(strides)
        self.conv_bias = conv_bias
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.train_cfg = train_cfg
        self.test_cfg = self.settings_from(test_cfg)
        self.bbox_coder = MODELS.build(bbox_coder or dict(type='DistancePointBBoxCoder'))
        self.prior_generator = MODELS.build(dict(type='MlvlPointGenerator', strides=strides))
        self.num_base_priors = self.prior_generator.num_base_priors[0]
        self._init_layers()

    def _init_layers(self) -> None:
        self.cls_convs = self._tower()
        self.reg_convs = self._tower()
        self.conv_cls = nn.Conv2d(self.feat_channels, self.cls_out_channels, 3, padding=1)
        self.conv_reg = nn.Conv2d(self.feat_channels, 4, 3, padding=1)

    def _tower(self) -> nn.ModuleList:
        return nn.ModuleList(
            ConvModule(
                self.in_channels if i == 0 else self.feat_channels,
                self.feat_channels,
                3,
                stride=1,
                padding=1,
                conv_cfg=self.conv_cfg,
                norm_cfg=self.norm_cfg,
                bias=self.conv_bias,
            )
            for i in range(self.stacked_convs)
        )

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``cls_score``, ``bbox_pred`` and the two tower features of one level."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.conv_cls(cls_feat), self.conv_reg(reg_feat), cls_feat, reg_feat

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: ``cls_scores [B, C, H, W]`` and ``bbox_preds [B, 4, H, W]``."""
        outs = [self.forward_single(x) for x in feats]
        return [o[0] for o in outs], [o[1] for o in outs]

    def level_outputs(self, cls_score: Tensor, bbox_pred: Tensor):
        logits = self.flatten_level(cls_score, self.cls_out_channels)
        scores = logits.sigmoid() if self.use_sigmoid_cls else logits.softmax(-1)[..., :-1]
        return scores, self.flatten_level(bbox_pred, 4), None

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        if local_metadata.get('version') is None:
            # Unversioned (old) checkpoints: '<prefix>fcos_cls.weight' -> '<prefix>conv_cls.weight'.
            # MMDetection looks at the key's 2nd component; relative to the prefix is the same
            # for a top-level head and stays right for a nested one.
            for key in [k for k in state_dict if k.startswith(prefix)]:
                name, _, rest = key[len(prefix) :].partition('.')
                for suffix in ('cls', 'reg', 'centerness'):
                    if name.endswith(suffix):
                        state_dict[f'{prefix}conv_{suffix}.{rest}'] = state_dict.pop(key)
                        break
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
