"""MMDetection's ``DINOHead`` (a ``DeformableDETRHead``) at test time: the last decoder layer's
class logits and refined boxes, then the top ``max_per_img`` (query, class) pairs of the sigmoid
scores (no NMS, no threshold), shared with :class:`~deploy.models.dense_heads.DETRHead`."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ...spec import DetrSettings, parse_settings
from ..layers.deformable_transformer import inverse_sigmoid
from .detr_head import DETRHead

__all__ = ['DINOHead']


def _reg_branch(embed_dims: int, num_reg_fcs: int) -> nn.Sequential:
    """``(Linear, ReLU) x num_reg_fcs, Linear(C, 4)``: MMDetection's keys ``0, 2, 4``."""
    layers: list[nn.Module] = []
    for _ in range(num_reg_fcs):
        layers += [nn.Linear(embed_dims, embed_dims), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(embed_dims, 4))


@MODELS.register_module()
class DINOHead(DETRHead):
    """Per decoder layer (and, two-stage, one more for the encoder's query selection) a class
    branch ``cls_branches.{i}`` (Linear) and a box branch ``reg_branches.{i}`` (MLP).

    The detector builds it with ``num_pred_layer`` (decoder layers, plus one when two-stage)
    and ``share_pred_layer`` (no box refinement: one branch for every layer). Inherits the
    selection and decoding of :class:`DETRHead` (sigmoid classifier).

    Args:
        num_classes: object classes.
        embed_dims: channels of the decoder output.
        num_reg_fcs: hidden linear layers of a box branch.
        num_pred_layer: branches.
        as_two_stage: the last branch serves the encoder.
        share_pred_layer: one branch for all layers.
        loss_cls: must use the sigmoid (DINO's focal loss).
        test_cfg: :class:`~deploy.spec.DetrSettings` (``max_per_img``, ``batch_invariant``).
        sync_cls_avg_factor, loss_bbox, loss_iou, train_cfg, init_cfg: training only.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dims: int = 256,
        num_reg_fcs: int = 2,
        num_pred_layer: int = 6,
        as_two_stage: bool = False,
        share_pred_layer: bool = False,
        sync_cls_avg_factor: bool = False,
        loss_cls: Mapping | None = None,
        loss_bbox: Mapping | None = None,
        loss_iou: Mapping | None = None,
        train_cfg: Mapping | None = None,
        test_cfg: DetrSettings | Mapping | None = None,
        init_cfg: dict | None = None,
    ):
        nn.Module.__init__(self)  # DETRHead's own layers are not DINO's
        if not (loss_cls or {}).get('use_sigmoid', False):
            raise ConfigError('DINOHead: loss_cls must use the sigmoid (use_sigmoid=True)')
        self.num_classes = num_classes
        self.embed_dims = embed_dims
        self.use_sigmoid_cls = True
        self.cls_out_channels = num_classes
        self.as_two_stage = as_two_stage
        self.test_cfg = parse_settings(DetrSettings, test_cfg, 'test_cfg')
        if share_pred_layer:
            cls_branch, reg_branch = (
                nn.Linear(embed_dims, num_classes),
                _reg_branch(embed_dims, num_reg_fcs),
            )
            self.cls_branches = nn.ModuleList([cls_branch] * num_pred_layer)
            self.reg_branches = nn.ModuleList([reg_branch] * num_pred_layer)
        else:
            self.cls_branches = nn.ModuleList(
                nn.Linear(embed_dims, num_classes) for _ in range(num_pred_layer)
            )
            self.reg_branches = nn.ModuleList(
                _reg_branch(embed_dims, num_reg_fcs) for _ in range(num_pred_layer)
            )

    @property
    def last_decoder_layer(self) -> int:
        return len(self.cls_branches) - 1 - int(self.as_two_stage)

    def forward(self, hidden_states: Tensor, references: Tensor) -> tuple[Tensor, Tensor]:
        """The last decoder layer's normed output ``[B, Q, C]`` and the reference boxes that
        entered it ``[B, Q, 4]`` -> class logits ``[B, Q, num_classes]`` and boxes ``[B, Q,
        4]`` (normalised ``cx, cy, w, h`` of the real image)."""
        layer = self.last_decoder_layer
        cls_scores = self.cls_branches[layer](hidden_states)
        offsets = self.reg_branches[layer](hidden_states)
        return cls_scores, (offsets + inverse_sigmoid(references)).sigmoid()
