"""RTMDet (Lyu et al., 2022): CSPNeXt + CSPNeXtPAFPN + :class:`RTMDetSepBNHead`; with
:class:`RTMDetInsSepBNHead`, RTMDet-Ins (instance masks from dynamic kernels)."""

import numpy as np
from torch import Tensor

from ...registry import MODELS
from .single_stage import SingleStageDetector


@MODELS.register_module()
class RTMDet(SingleStageDetector):
    """MMDetection 3.x's ``RTMDet``; ``use_syncbn`` is accepted (SyncBN is plain BN here).

    With a mask head the deploy outputs are ``dets``, ``labels`` and ``mask_logits [B, K, h, w]``
    (stride-8 logits over the input canvas; see :mod:`deploy.postprocess`)."""

    #: dynamo unrolls the 64 bisection steps of each level's ``nms_pre`` cut slowly (tiny:
    #: 111 s, Ins-tiny 265 s); TorchScript gives the same detections (``--verify``, every size)
    default_exporter = 'torchscript'

    def __init__(self, *args, use_syncbn: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.with_mask = hasattr(self.bbox_head, 'mask_head')
        if self.with_mask:
            self.output_names = ('dets', 'labels', 'mask_logits')

    def forward_raw(self, img: Tensor) -> dict[str, Tensor]:
        if not self.with_mask:
            return super().forward_raw(img)
        *groups, mask_feat = self.bbox_head(self.extract_feat(img))
        prefixes = self.bbox_head.raw_output_prefixes
        raw = {
            f'{prefixes[g]}_{lvl}': t
            for g, per_level in enumerate(groups)
            for lvl, t in enumerate(per_level)
        }
        raw['mask_feat'] = mask_feat
        return raw

    def pad_masks(self, per_image: list[dict], num_rows: int) -> np.ndarray:
        """Eager per-image ``mask_logits [n, h, w]`` -> the graph's ``[B, num_rows, h, w]``."""
        size = per_image[0]['mask_logits'].shape[-2:]
        logits = np.zeros((len(per_image), num_rows, *size), np.float32)
        for i, result in enumerate(per_image):
            n = min(len(result['mask_logits']), num_rows)
            logits[i, :n] = result['mask_logits'][:n].cpu().numpy()
        return logits
