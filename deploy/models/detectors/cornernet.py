"""CornerNet (Law and Deng, 2018): HourglassNet + :class:`~deploy.models.dense_heads.CornerHead`.

CornerNet's test pipeline pastes each image into the middle of a larger canvas
(``RandomCenterCropPad``, see :class:`deploy.spec.CenterPad`), and MMDetection decodes corners
relative to the image: it subtracts the image's offset inside the input *before* clamping corners
at 0, checking box geometry and running soft-NMS, so the offset cannot be applied after the graph
without changing detections (MMDetection 2.x's ONNX export did, and lost 0.2 AP). Here the graph
computes each image's offset from its ``img_shape`` input with the pipeline's rule, which the
model reads from its spec (``model.spec.preprocess``, set by
:func:`deploy.models.loading.init_detector`), and decodes exactly as MMDetection does; detections
come out relative to each image, like every other detector's.
"""

import torch
from torch import Tensor

from ...registry import MODELS
from ...spec import PreprocessConfig
from ..dense_heads.corner_head import spatial_size
from .single_stage import SingleStageDetector


@MODELS.register_module()
class CornerNet(SingleStageDetector):
    """MMDetection's ``CornerNet`` (a ``SingleStageDetector`` without neck).

    Only the last feature level (the last hourglass stack) is decoded at test time, as in
    MMDetection; :meth:`forward_raw` returns that level's head outputs.
    """

    @property
    def preprocess(self) -> PreprocessConfig | None:
        """The test pipeline the model was loaded with (None for a model built by hand: then
        images are taken to sit at the top-left corner of the input)."""
        spec = getattr(self, 'spec', None)
        return spec.preprocess if spec is not None else None

    def image_offsets(self, img_shape: Tensor) -> Tensor:
        """``[B, 2]`` float ``(top, left)`` of each image inside the input, from its
        ``img_shape [B, 2]`` float ``(h, w)`` by the pipeline's placement rule (traceable)."""
        pre = self.preprocess or PreprocessConfig()
        top, left = pre.image_offset(img_shape[:, 0], img_shape[:, 1])
        return torch.stack([top, left], dim=1)

    def _head_outputs(self, img: Tensor) -> list[Tensor]:
        return self.bbox_head.forward_test(self.extract_feat(img))

    def predict(self, img: Tensor, img_metas: list[dict]) -> list[dict]:
        img_shape = img.new_tensor([list(m['img_shape'][:2]) for m in img_metas])
        return self.bbox_head.predict_by_feat(
            self._head_outputs(img), spatial_size(img), self.image_offsets(img_shape)
        )

    def forward_deploy(self, img: Tensor, img_shape: Tensor) -> tuple[Tensor, ...]:
        return self.bbox_head.predict_by_feat_deploy(
            self._head_outputs(img), spatial_size(img), self.image_offsets(img_shape)
        )

    def forward_raw(self, img: Tensor) -> dict[str, Tensor]:
        outputs = self._head_outputs(img)
        return dict(zip(self.bbox_head.raw_output_prefixes, outputs))
