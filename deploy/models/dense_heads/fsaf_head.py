"""FSAF head (MMDetection's ``FSAFHead``): the RetinaNet head with one anchor per location and a
ReLU on the box branch, whose TBLR distances must not be negative."""

from torch import Tensor, nn

from ...registry import MODELS
from .retina_head import RetinaHead


@MODELS.register_module()
class FSAFHead(RetinaHead):
    """Children and keys of :class:`RetinaHead` (``retina_cls``, ``retina_reg``); boxes are
    decoded by the config's ``TBLRBBoxCoder``.

    Args:
        score_threshold: accepted for config compatibility (training only in MMDetection).
        Other args: see :class:`RetinaHead`.
    """

    def __init__(self, *args, score_threshold: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.score_threshold = score_threshold
        self.relu = nn.ReLU(inplace=True)

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cls_score, bbox_pred = super().forward_single(x)
        return cls_score, self.relu(bbox_pred)
