"""``ImageClassifier``: backbone -> neck -> head, as MMClassification 0.x and MMPretrain 1.x build
it (``backbone.*``, ``neck.*``, ``head.*`` keys), with the three ways every zoo model runs.

* :meth:`ImageClassifier.predict` is the eager reference: class probabilities (the softmax of
  the head's logits), MMPretrain's ``pred_score``;
* :meth:`ImageClassifier.forward_deploy` is what is exported: the same probabilities as the graph
  output ``scores [B, num_classes]``, from the graph input ``input [B, 3, H, W]`` alone (a
  classifier needs no image shape);
* :meth:`ImageClassifier.forward_raw` returns the logits ``cls_score`` (``--skip-postprocess``,
  verification).

The top-k labels are read from ``scores`` after the graph (:mod:`deploy.evaluation.accuracy`), by
every backend alike.
"""

from collections.abc import Mapping

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ...spec import TestSettings


@MODELS.register_module()
class ImageClassifier(nn.Module):
    """Image classifier.

    Args:
        backbone, neck, head: module configs (the neck is optional; a head is required).
        pretrained, init_cfg: accepted and ignored (weights come from the checkpoint).
        train_cfg: training options; only ``augments=None`` (no Mixup / CutMix) is supported by
            our training loop, and inference ignores it.
        data_preprocessor: MMPretrain's normalisation; read from the config by
            :func:`deploy.config.get_preprocess_cfg`, ignored here.
        test_cfg: classifiers have no test-time settings (an empty :class:`TestSettings`).
    """

    #: graph inputs and outputs of the deploy graph
    input_names: tuple[str, ...] = ('input',)
    output_names: tuple[str, ...] = ('scores',)
    #: class names, set from the checkpoint or config when known
    class_names: tuple[str, ...] | None = None
    #: no score threshold: nothing to re-apply after the graph
    threshold_on_output_score = False

    def __init__(
        self,
        backbone: Mapping,
        neck: Mapping | None = None,
        head: Mapping | None = None,
        pretrained: str | None = None,
        train_cfg: Mapping | None = None,
        data_preprocessor: Mapping | None = None,
        init_cfg: dict | list | None = None,
        test_cfg: TestSettings | Mapping | None = None,
    ):
        super().__init__()
        if head is None:
            raise ConfigError('model.head is missing: an ImageClassifier needs a head to classify')
        if isinstance(test_cfg, Mapping) and test_cfg:
            raise ConfigError(f'an ImageClassifier has no test_cfg, got {dict(test_cfg)}')
        self.backbone = MODELS.build(backbone)
        if neck is not None:
            self.neck = MODELS.build(neck)
        self.head = MODELS.build(head)
        self.train_cfg = dict(train_cfg) if train_cfg else {}

    @property
    def with_neck(self) -> bool:
        return hasattr(self, 'neck')

    @property
    def num_classes(self) -> int:
        return int(self.head.num_classes)

    def extract_feat(self, img: Tensor) -> Tensor | tuple[Tensor, ...]:
        """``img [B, 3, H, W]`` -> the backbone's outputs, pooled by the neck (``[B, C]`` each)."""
        x = self.backbone(img)
        return self.neck(x) if self.with_neck else x

    def forward(self, img: Tensor) -> Tensor:
        """Class logits ``[B, num_classes]`` (training, MMPretrain's ``mode='tensor'``)."""
        return self.head(self.extract_feat(img))

    def predict(self, img: Tensor, img_metas: list[dict] | None = None) -> Tensor:
        """The eager reference: class probabilities ``[B, num_classes]`` (each row sums to 1)."""
        return self.head.predict(self.extract_feat(img))

    def forward_deploy(self, img: Tensor) -> tuple[Tensor]:
        """``input [B, 3, H, W]`` -> ``(scores [B, num_classes],)``, the probabilities."""
        return (self.predict(img),)

    def forward_raw(self, img: Tensor) -> dict[str, Tensor]:
        """The head's logits by name: ``cls_score [B, num_classes]``."""
        return {'cls_score': self(img)}
