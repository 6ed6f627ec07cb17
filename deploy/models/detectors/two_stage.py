"""Two-stage detectors: backbone -> neck -> RPN -> RoI head (Faster / Mask / Cascade R-CNN).

* :meth:`TwoStageDetector.predict`: eager proposals per image, then the RoI head's eager
  prediction (MMDetection semantics);
* :meth:`TwoStageDetector.forward_deploy`: ``max_per_img`` padded proposals, the RoI head's
  batched path, outputs ``dets``, ``labels`` (and ``masks [B, K, 28, 28]``: each detection's mask
  probabilities over its box, pasted by the shared post-processing);
* :meth:`TwoStageDetector.forward_raw`: the RPN maps (deterministic raw tensors that cover the
  backbone, the neck and the first stage).
"""

import numpy as np
from torch import Tensor

from ...registry import MODELS
from ...spec import TestSettings, test_settings_for_model
from .base import BaseDetector


@MODELS.register_module()
class TwoStageDetector(BaseDetector):
    """MMDetection's ``TwoStageDetector`` with its config keys and child names.

    ``test_cfg`` (typed :class:`~deploy.spec.TestSettings`) has ``rpn`` and ``rcnn`` parts,
    handed to the RPN and the RoI head as MMDetection does. ``data_preprocessor``, ``pretrained``
    and ``init_cfg`` are accepted for compatibility.
    """

    def __init__(
        self,
        backbone: dict,
        rpn_head: dict,
        roi_head: dict,
        neck: dict | None = None,
        train_cfg: dict | None = None,
        test_cfg: TestSettings | dict | None = None,
        data_preprocessor: dict | None = None,
        pretrained: str | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        self.backbone = MODELS.build(backbone)
        if neck is not None:
            self.neck = MODELS.build(neck)
        train_cfg = train_cfg or {}
        test_cfg = test_settings_for_model(dict(rpn_head=rpn_head, roi_head=roi_head), test_cfg)
        self.rpn_head = MODELS.build(
            dict(rpn_head, train_cfg=train_cfg.get('rpn'), test_cfg=test_cfg.rpn)
        )
        self.roi_head = MODELS.build(
            dict(roi_head, train_cfg=train_cfg.get('rcnn'), test_cfg=test_cfg.rcnn)
        )
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.output_names = (
            ('dets', 'labels', 'masks') if self.roi_head.with_mask else ('dets', 'labels')
        )

    def predict(self, img: Tensor, img_metas: list[dict]) -> list[dict]:
        feats = self.extract_feat(img)
        proposals = self.rpn_head.predict_proposals(self.rpn_head(feats), img_metas)
        return self.roi_head.predict(feats, proposals, img_metas)

    def forward_deploy(self, img: Tensor, img_shape: Tensor) -> tuple[Tensor, ...]:
        feats = self.extract_feat(img)
        proposals, valid = self.rpn_head.predict_proposals_deploy(self.rpn_head(feats), img_shape)
        return self.roi_head.predict_deploy(feats, proposals, valid, img_shape)

    def forward_raw(self, img: Tensor) -> dict[str, Tensor]:
        groups = self.rpn_head(self.extract_feat(img))
        prefixes = self.rpn_head.raw_output_prefixes
        return {
            f'{prefixes[g]}_{lvl}': t
            for g, per_level in enumerate(groups)
            for lvl, t in enumerate(per_level)
        }

    def pad_masks(self, per_image: list[dict], num_rows: int) -> np.ndarray:
        """Eager per-image ``masks [n, m, m]`` -> the graphs' ``[B, num_rows, m, m]`` layout."""
        size = self.roi_head._mask_size()
        masks = np.zeros((len(per_image), num_rows, *size), np.float32)
        for i, result in enumerate(per_image):
            n = min(len(result['masks']), num_rows)
            masks[i, :n] = result['masks'][:n].cpu().numpy()
        return masks


@MODELS.register_module()
class FasterRCNN(TwoStageDetector):
    """Faster R-CNN (Ren et al., 2015): ResNet + FPN + RPN + :class:`StandardRoIHead`."""

    #: as RetinaNet's: TorchScript, half dynamo's export CPU time on R50, the same detections
    default_exporter = 'torchscript'


@MODELS.register_module()
class MaskRCNN(TwoStageDetector):
    """Mask R-CNN (He et al., 2017): Faster R-CNN plus an :class:`FCNMaskHead`."""


@MODELS.register_module()
class CascadeRCNN(TwoStageDetector):
    """Cascade R-CNN (Cai and Vasconcelos, 2018), with or without masks: a
    :class:`CascadeRoIHead` of three increasingly strict stages."""
