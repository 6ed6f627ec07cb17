"""RTMDet (Lyu et al., 2022): CSPNeXt + CSPNeXtPAFPN + :class:`RTMDetSepBNHead`."""

from ...registry import MODELS
from .single_stage import SingleStageDetector


@MODELS.register_module()
class RTMDet(SingleStageDetector):
    """MMDetection 3.x's ``RTMDet``; ``use_syncbn`` is accepted (SyncBN is plain BN here)."""

    def __init__(self, *args, use_syncbn: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
