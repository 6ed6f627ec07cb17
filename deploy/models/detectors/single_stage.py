"""One-stage detectors: backbone -> neck -> dense head (RetinaNet, FCOS, FSAF, SSD, YOLOv3, ...)."""

from torch import Tensor

from ...registry import MODELS
from ...spec import TestSettings, test_settings_for_model
from .base import BaseDetector


@MODELS.register_module()
class SingleStageDetector(BaseDetector):
    """MMDetection's ``SingleStageDetector`` with its config keys and child names.

    ``data_preprocessor``, ``pretrained`` and ``init_cfg`` are accepted for config compatibility;
    pre-processing is done by the test pipeline, and weights come from checkpoints only.
    """

    def __init__(
        self,
        backbone: dict,
        bbox_head: dict,
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
        # Typed settings from the model spec; a raw dict (a model built by hand) is checked here.
        test_cfg = test_settings_for_model(dict(bbox_head=bbox_head), test_cfg)
        bbox_head = dict(bbox_head)
        bbox_head.update(train_cfg=train_cfg, test_cfg=test_cfg.head)
        self.bbox_head = MODELS.build(bbox_head)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    def predict(self, img: Tensor, img_metas: list[dict]) -> list[dict]:
        return self.bbox_head.predict_by_feat(self.bbox_head(self.extract_feat(img)), img_metas)

    def forward_deploy(self, img: Tensor, img_shape: Tensor) -> tuple[Tensor, ...]:
        return self.bbox_head.predict_by_feat_deploy(
            self.bbox_head(self.extract_feat(img)), img_shape
        )

    def forward_raw(self, img: Tensor) -> dict[str, Tensor]:
        groups = self.bbox_head(self.extract_feat(img))
        prefixes = self.bbox_head.raw_output_prefixes
        return {
            f'{prefixes[g]}_{lvl}': t
            for g, per_level in enumerate(groups)
            for lvl, t in enumerate(per_level)
        }


@MODELS.register_module()
class RetinaNet(SingleStageDetector):
    """RetinaNet (Lin et al., 2017): ResNet + FPN + :class:`RetinaHead`."""

    #: the exporter ``tools/pytorch2onnx.py`` uses without ``--exporter``: on R50 TorchScript
    #: takes half the CPU time of dynamo for the same detections (``--verify``: all exact,
    #: docs/benchmark.md "Export time against MMDeploy")
    default_exporter = 'torchscript'


@MODELS.register_module()
class FCOS(SingleStageDetector):
    """FCOS (Tian et al., 2019): ResNet + FPN + :class:`FCOSHead`."""


@MODELS.register_module()
class FSAF(SingleStageDetector):
    """FSAF (Zhu et al., 2019), its anchor-free branch: ResNet + FPN + :class:`FSAFHead`."""


@MODELS.register_module()
class YOLOV3(SingleStageDetector):
    """YOLOv3 (Redmon and Farhadi, 2018): Darknet-53 + YOLOV3Neck + :class:`YOLOV3Head`."""


@MODELS.register_module()
class YOLOX(SingleStageDetector):
    """YOLOX (Ge et al., 2021): CSPDarknet + YOLOXPAFPN + :class:`YOLOXHead`.

    ``input_size``, ``random_size_range`` and ``random_size_interval`` (MMDetection 2.x's
    multi-scale training) are accepted for config compatibility and unused at test time.
    """

    #: m / l / x were verified with TorchScript (every case exact, docs/yolox.md); it is also
    #: the faster exporter here
    default_exporter = 'torchscript'

    def __init__(
        self,
        *args,
        input_size: tuple = (640, 640),
        random_size_range: tuple = (15, 25),
        random_size_interval: int = 10,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
