"""PointRend (Kirillov et al., 2020): Mask R-CNN whose masks are refined point by point.

The detector itself is a :class:`TwoStageDetector` (caffe-style ResNet + FPN + RPN); everything
PointRend adds lives in :class:`~deploy.models.roi_heads.PointRendRoIHead`. Its ``masks`` output
is ``[B, K, S, S]`` with ``S = 7 * scale_factor ** subdivision_steps`` (224 for the COCO config).
"""

from ...registry import MODELS
from .two_stage import TwoStageDetector


@MODELS.register_module()
class PointRend(TwoStageDetector):
    """PointRend: ResNet + FPN + RPN + :class:`PointRendRoIHead`."""
