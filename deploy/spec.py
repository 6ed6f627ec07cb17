"""The contract of a model: what it is, how to feed it, and how its outputs are to be read.

One typed description, :class:`ModelSpec`, travels with every model file: it is built once from a
config (``deploy.config.spec_from_config``), handed to the zoo (the heads take their test-time
settings from it), written into the ONNX metadata and the TensorRT sidecar at export, and read back
by every backend. Nothing else reads MMDetection's ``test_cfg`` dicts, so each setting has one
default, stated here once.

This module sits at the bottom of the package: it imports nothing of ours but the errors and the
settings parser (:mod:`deploy.settings`).

Settings classes and the ``test_cfg`` part each one reads:

========================  ===============================================================
:class:`DenseSettings`    ``model.test_cfg`` of one-stage detectors (RetinaNet, FCOS, ...)
:class:`RpnSettings`      ``model.test_cfg.rpn``
:class:`RcnnSettings`     ``model.test_cfg.rcnn`` (Faster / Mask / Cascade R-CNN)
:class:`PointRendSettings`  ``model.test_cfg.rcnn`` of ``PointRendRoIHead``
:class:`CornerSettings`   ``model.test_cfg`` of ``CornerHead`` (CornerNet)
:class:`DetrSettings`     ``model.test_cfg`` of ``DETRHead``
:class:`YOLOXSettings`    ``model.test_cfg`` of ``YOLOXHead``
========================  ===============================================================
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .errors import ConfigError
from .settings import parse_settings, unknown_key_error

__all__ = [
    'CenterPad',
    'CornerSettings',
    'DenseMaskSettings',
    'DenseSettings',
    'DetrSettings',
    'InputSpec',
    'ModelSpec',
    'NmsSettings',
    'PointRendSettings',
    'PreprocessConfig',
    'RcnnSettings',
    'ResultFilter',
    'RpnSettings',
    'StageSettings',
    'TestSettings',
    'YOLOXSettings',
    'parse_settings',
]

#: bumped when the JSON layout of :class:`ModelSpec` changes incompatibly
SPEC_VERSION = 1
#: the ``metadata_props`` key of the ONNX file that holds the spec (JSON)
METADATA_KEY = 'deploy'

PRECISIONS = ('fp32', 'fp16', 'int8')
LAYOUTS = ('normalized', 'bgr_uint8')
TASKS = ('detection', 'instance-segmentation', 'classification')


# --------------------------------------------------------------------------------------------
# pre-processing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CenterPad:
    """MMDetection's ``RandomCenterCropPad(test_mode=True)``: the image is pasted into the middle
    of a larger canvas (CornerNet's test pipeline).

    The canvas of an ``h x w`` image is ``(h | value) + add_pix`` high (``mode='logical_or'``) or
    ``ceil(h / value) * value`` (``mode='size_divisor'``), and as wide by the same rule; the
    image's top-left corner lands at ``(canvas_h // 2 - h // 2, canvas_w // 2 - w // 2)``, the
    *offset* of the image inside the network input. :meth:`canvas_size` and :meth:`offset` take
    Python ints or float tensors (the graph derives the offset from ``img_shape``).

    Attributes:
        mode: ``'logical_or'`` or ``'size_divisor'`` (``test_pad_mode[0]``).
        value: ``test_pad_mode[1]``; for ``logical_or``, ``value + 1`` must be a power of two
            (127: canvases of 128k - 1 pixels).
        add_pix: ``test_pad_add_pix`` (CenterNet's 1).
        fill: canvas pixel value per channel, in the image's BGR order, before normalisation
            (MMDetection fills with the transform's mean, so the padding normalises to about 0).
    """

    mode: str = 'logical_or'
    value: int = 127
    add_pix: int = 0
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)

    CHOICES: ClassVar[dict[str, tuple]] = {'mode': ('logical_or', 'size_divisor')}

    def canvas_size(self, h, w):
        """``(canvas_h, canvas_w)`` of an ``h x w`` image (ints, or float tensors holding ints)."""
        if self.mode == 'logical_or':
            block = self.value + 1  # x | (2^k - 1) == (x // 2^k) * 2^k + 2^k - 1
            return tuple((x // block) * block + self.value + self.add_pix for x in (h, w))
        return tuple(-(-x // self.value) * self.value for x in (h, w))

    def offset(self, h, w):
        """``(top, left)`` of an ``h x w`` image inside its canvas (ints or float tensors)."""
        canvas_h, canvas_w = self.canvas_size(h, w)
        return canvas_h // 2 - h // 2, canvas_w // 2 - w // 2


@dataclass(frozen=True)
class PreprocessConfig:
    """Test-time pre-processing of one model.

    Load (OpenCV, BGR) -> resize -> [center pad] -> normalise -> pad bottom/right.

    Attributes:
        mean, std: per-channel normalisation, in channel order *after* the optional BGR->RGB swap.
        to_rgb: swap the BGR image read by OpenCV to RGB before normalising.
        scale: target ``(long_edge, short_edge)`` for keep-ratio resize (MMCV's ``img_scale``
            convention, e.g. ``(1333, 800)``), or ``(w, h)`` when ``keep_ratio`` is False.
        keep_ratio: keep the aspect ratio when resizing.
        size_divisor: pad bottom/right so both sides are multiples of this (``None``: no pad).
        pad_value: value of padded pixels, after normalisation (MMDetection pads with 0).
        resize_edge: classifiers (MMPretrain's ``ResizeEdge``, MMClassification 0.x's
            ``Resize(size=(s, -1))``): resize so that this edge (``'short'``, ``'long'``,
            ``'width'`` or ``'height'``) is ``scale[0]`` pixels and the other keeps the aspect
            ratio (truncated to an int); ``scale`` is then ``(s, s)``. ``None``: the rule above.
        crop_size: ``(h, w)`` of a centre crop after the resize (classifiers), or ``None``.
        resize_backend: ``'cv2'`` (OpenCV) or ``'pillow'`` (Pillow's ``Image.resize``, which
            antialiases when shrinking: MMPretrain's ImageNet configs use it).
        interpolation: ``'bilinear'``, ``'nearest'``, ``'bicubic'``, ``'area'`` (cv2),
            ``'lanczos'``, ``'box'`` / ``'hamming'`` (pillow).
        resize_factor: resize by this factor instead of to ``scale`` (``MultiScaleFlipAug(
            scale_factor=...)`` or ``Resize(scale_factor=...)``); 1.0 keeps every image's size.
        to_float32: ``LoadImageFromFile(to_float32=True)``: the image is float32 before it is
            resized (no rounding to uint8 there) and center-padded.
        center_pad: paste the image into the middle of a canvas (:class:`CenterPad`) instead of
            at the top-left corner of the network input; boxes come out relative to the image.
        pad_to_square: ``Pad(pad_to_square=True)`` (YOLOX): pad bottom/right to a square of the
            longer side with ``pad_value`` before the ``size_divisor`` pad.
        pad_to_size: ``(h, w)``: MMDetection 3.x's ``Pad(size=...)`` (RTMDet): the resized image
            is padded bottom/right to exactly this size with :attr:`pad_to_size_value`, in raw
            pixel values before normalisation, and the padded size becomes its ``img_shape``
            (what boxes are clipped to), as MMDetection's ``Pad`` does.
        pad_to_size_value: the raw pixel value of that padding (RTMDet's 114).
    """

    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    to_rgb: bool = True
    scale: tuple[int, int] = (1333, 800)
    keep_ratio: bool = True
    size_divisor: int | None = 32
    pad_value: float = 0.0
    resize_edge: str | None = None
    crop_size: tuple[int, int] | None = None
    resize_backend: str = 'cv2'
    interpolation: str = 'bilinear'
    resize_factor: float | None = None
    to_float32: bool = False
    center_pad: CenterPad | None = None
    pad_to_square: bool = False
    pad_to_size: tuple[int, int] | None = None
    pad_to_size_value: float = 0.0

    def image_offset(self, h, w):
        """``(top, left)`` of an ``h x w`` (resized) image inside the network input: ``(0, 0)``
        unless :attr:`center_pad` (ints, or float tensors of the same shape)."""
        if self.center_pad is None:
            return h * 0, w * 0
        return self.center_pad.offset(h, w)


# --------------------------------------------------------------------------------------------
# post-processing settings (MMDetection's test_cfg, typed)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Replaceable:
    def replace(self, **changes: Any):
        """A copy with ``changes`` (settings are frozen: share them, never mutate them)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class NmsSettings(_Replaceable):
    """``test_cfg.nms``.

    Attributes:
        type: ``'nms'`` (greedy, hard) or ``'soft_nms'`` (only where the head supports it).
        iou_threshold: a box is suppressed when its IoU with a kept box is strictly greater.
        max_output_boxes_per_class: at most this many kept boxes per class (``<= 0``: no cap
            beyond ``max_per_img``; ONNX ``NonMaxSuppression``'s input of that name).
        method, sigma, min_score: soft-NMS only (MMCV's ``soft_nms``): score decay
            ``'linear'``, ``'gaussian'`` (width ``sigma``) or ``'naive'`` (to 0 above the IoU
            threshold), and the score under which a box falls out.
    """

    type: str = 'nms'
    iou_threshold: float = 0.5
    max_output_boxes_per_class: int = -1
    method: str = 'linear'
    sigma: float = 0.5
    min_score: float = 1e-3

    CHOICES: ClassVar[dict[str, tuple]] = {
        'type': ('nms', 'soft_nms'),
        'method': ('linear', 'gaussian', 'naive'),
    }


@dataclass(frozen=True)
class StageSettings(_Replaceable):
    """Base of the settings of one post-processing stage; see the subclasses.

    Subclasses list their ``test_cfg`` keys as fields. ``LEGACY_KEYS`` maps old MMDetection key
    names to the current ones (or to ``None`` for keys that are accepted and ignored because
    they change nothing).
    """

    #: name of the stage in the JSON (and in errors)
    KIND: ClassVar[str] = 'stage'
    LEGACY_KEYS: ClassVar[dict[str, str | None]] = {}
    #: ``nms.type`` values the stage implements
    NMS_TYPES: ClassVar[tuple[str, ...]] = ('nms',)

    def check_parsed(self, where: str) -> None:
        """Refuse an NMS the stage does not implement, or a stage that keeps no detection."""
        max_per_img = getattr(self, 'max_per_img', None)
        if isinstance(max_per_img, int) and max_per_img < 1:
            raise ConfigError(
                f'`{where}.max_per_img` must be at least 1, got {max_per_img} (a model that keeps '
                'no detection per image cannot be exported or scored)'
            )
        nms = getattr(self, 'nms', None)
        if nms is not None and nms.type not in self.NMS_TYPES:
            raise ConfigError(
                f'`{where}.nms.type={nms.type!r}` is not supported by this head (it runs '
                f'{" or ".join(self.NMS_TYPES)})'
            )

    @property
    def output_cap(self) -> int:
        """Rows of the stage's padded output (``max_per_img``)."""
        return int(getattr(self, 'max_per_img', 100))

    @property
    def boxes_per_class(self) -> int:
        """The effective ``nms.max_output_boxes_per_class``: never more than ``max_per_img``."""
        nms = getattr(self, 'nms', None)
        cap = self.output_cap
        if nms is None or nms.max_output_boxes_per_class <= 0:
            return cap
        return min(nms.max_output_boxes_per_class, cap)


@dataclass(frozen=True)
class DenseSettings(StageSettings):
    """``model.test_cfg`` of a one-stage detector (MMDetection's dense heads).

    Attributes:
        score_thr: (prior, class) pairs with a score at or below it are no candidates.
        nms_pre: per level, the best this many (prior, class) pairs (``<= 0``: all).
        deploy_nms_pre: exported graphs only: an extra cut to the best this many candidates of
            all levels before NMS (``<= 0``: off; it changes results when it binds).
        min_bbox_size: boxes not wider and taller than this are dropped (``< 0``: off).
        conf_thr: priors whose score factor (YOLOv3's objectness) is below it are no candidates
            (``<= 0``: off).
        nms: the NMS of the candidates, per class.
        max_per_img: detections kept per image (rows of the exported outputs).
    """

    KIND: ClassVar[str] = 'dense'

    score_thr: float = 0.0
    nms_pre: int = -1
    deploy_nms_pre: int = -1
    min_bbox_size: float = -1.0
    conf_thr: float = -1.0
    nms: NmsSettings = field(default_factory=NmsSettings)
    max_per_img: int = 100


@dataclass(frozen=True)
class YOLOXSettings(DenseSettings):
    """``model.test_cfg`` of ``YOLOXHead``: one label per prior (its best class), score
    ``cls * objectness`` kept at or above ``score_thr``, every prior a candidate.

    MMDetection's YOLOX has no ``nms_pre`` and no ``max_per_img``: it returns every NMS survivor.
    An exported graph needs a fixed number of output rows, so ``max_per_img`` (not a YOLOX key
    in MMDetection) caps them, eager and exported alike; with at most that many survivors the
    detections are MMDetection's.
    """

    KIND: ClassVar[str] = 'yolox'

    max_per_img: int = 1000


@dataclass(frozen=True)
class DenseMaskSettings(DenseSettings):
    """``model.test_cfg`` of a one-stage instance-segmentation head (RTMDet-Ins): the dense
    settings plus ``mask_thr_binary`` (mask probabilities strictly above it are foreground)."""

    KIND: ClassVar[str] = 'dense_mask'

    mask_thr_binary: float = 0.5


@dataclass(frozen=True)
class RpnSettings(StageSettings):
    """``model.test_cfg.rpn``: class-agnostic proposals, NMS per FPN level.

    Attributes:
        nms_pre: per level, the best this many anchors.
        min_bbox_size: proposals not wider and taller than this are dropped.
        nms: per-level NMS (``iou_threshold``, MMDetection uses 0.7).
        max_per_img: proposals kept per image.
    """

    KIND: ClassVar[str] = 'rpn'
    LEGACY_KEYS: ClassVar[dict[str, str | None]] = {
        # MMDetection 2.x before 2.12 (renamed with a deprecation warning there).
        'max_num': 'max_per_img',
        'nms_thr': 'nms.iou_threshold',
        'nms_post': None,  # equal to max_per_img in every released config
        'nms_across_levels': None,  # must be False: check_legacy
    }

    @classmethod
    def check_legacy(cls, key: str, value: Any, where: str) -> None:
        """Refuse what a legacy key asks for and the stage does not do."""
        if key == 'nms_across_levels' and value:
            raise ConfigError(
                f'`{where}.nms_across_levels=True` is not supported (MMDetection 2.12+ '
                'runs NMS per level); set it to False'
            )

    nms_pre: int = -1
    deploy_nms_pre: int = -1
    min_bbox_size: float = -1.0
    nms: NmsSettings = field(default_factory=lambda: NmsSettings(iou_threshold=0.7))
    max_per_img: int = 1000

    #: proposals are never thresholded by score or objectness (class constants, not keys)
    score_thr: ClassVar[float] = 0.0
    conf_thr: ClassVar[float] = -1.0


@dataclass(frozen=True)
class RcnnSettings(StageSettings):
    """``model.test_cfg.rcnn``: the R-CNN stage's detections and masks.

    Attributes:
        score_thr: (RoI, class) pairs with a softmax score at or below it are dropped.
        nms: per-class NMS.
        max_per_img: detections kept per image.
        mask_thr_binary: mask probabilities at or above it are foreground (pasted masks).
    """

    KIND: ClassVar[str] = 'rcnn'

    score_thr: float = 0.0
    nms: NmsSettings = field(default_factory=NmsSettings)
    max_per_img: int = 100
    mask_thr_binary: float = 0.5


@dataclass(frozen=True)
class PointRendSettings(RcnnSettings):
    """``model.test_cfg.rcnn`` of ``PointRendRoIHead``: the R-CNN stage plus mask refinement.

    Attributes:
        subdivision_steps: rounds of 2x upsampling of the coarse mask.
        subdivision_num_points: the most uncertain points refined per round.
        scale_factor: upsampling factor of each round.
    """

    KIND: ClassVar[str] = 'point_rend'

    subdivision_steps: int = 5
    subdivision_num_points: int = 784
    scale_factor: int = 2


@dataclass(frozen=True)
class CornerSettings(StageSettings):
    """``model.test_cfg`` of ``CornerHead`` (CornerNet).

    Attributes:
        corner_topk: corners kept per type (top-left, bottom-right) before pairing.
        local_maximum_kernel: max-pool kernel of the heatmap's local-maximum test.
        distance_threshold: pairs whose embedding distance exceeds it are rejected.
        score_thr: accepted and unused: MMDetection's ``CornerHead`` never applies it (its
            configs set 0.05 all the same).
        nms: usually ``soft_nms`` (gaussian, linear or naive).
        max_per_img: detections kept per image.
    """

    KIND: ClassVar[str] = 'corner'
    NMS_TYPES: ClassVar[tuple[str, ...]] = ('nms', 'soft_nms')

    corner_topk: int = 100
    local_maximum_kernel: int = 3
    distance_threshold: float = 0.5
    score_thr: float = 0.0
    nms: NmsSettings = field(
        default_factory=lambda: NmsSettings(type='soft_nms', method='gaussian')
    )
    max_per_img: int = 100


@dataclass(frozen=True)
class DetrSettings(StageSettings):
    """``model.test_cfg`` of ``DETRHead``: no NMS, the best ``max_per_img`` (query, class)
    pairs.

    Attributes:
        max_per_img: detections kept per image.
        batch_invariant: not MMDetection's: each image of a padded batch gives exactly its
            detections alone (MMDetection's batch-1 results), because the backbone never sees
            the padding and the transformer mask is the image's own feature extent. False:
            MMDetection's batch semantics, where padding reaches the backbone's border windows.
    """

    KIND: ClassVar[str] = 'detr'

    max_per_img: int = 100
    batch_invariant: bool = False


SETTINGS_BY_KIND: dict[str, type[StageSettings]] = {
    cls.KIND: cls
    for cls in (
        DenseSettings,
        YOLOXSettings,
        DenseMaskSettings,
        RpnSettings,
        RcnnSettings,
        PointRendSettings,
        CornerSettings,
        DetrSettings,
    )
}

#: heads whose ``test_cfg`` has keys of its own; every other head uses its role's default
#: (:class:`DenseSettings` for a one-stage head, :class:`RcnnSettings` for an RoI head)
SETTINGS_BY_HEAD_TYPE: dict[str, type[StageSettings]] = {
    'CornerHead': CornerSettings,
    'CentripetalHead': CornerSettings,
    'DETRHead': DetrSettings,
    'DINOHead': DetrSettings,
    'PointRendRoIHead': PointRendSettings,
    'YOLOXHead': YOLOXSettings,
    'RTMDetInsSepBNHead': DenseMaskSettings,
}


@dataclass(frozen=True)
class TestSettings:
    """The whole ``model.test_cfg``: one stage for one-stage detectors, ``rpn`` + ``rcnn`` for
    two-stage ones."""

    __test__ = False  # not a pytest test class, whatever its name says

    head: StageSettings | None = None
    rpn: RpnSettings | None = None
    rcnn: RcnnSettings | None = None

    @property
    def final(self) -> StageSettings | None:
        """The stage whose outputs are the detections."""
        return self.rcnn if self.rcnn is not None else self.head

    @property
    def is_two_stage(self) -> bool:
        return self.rpn is not None or self.rcnn is not None


def registry_type_name(type_: Any) -> str:
    """``'RetinaNet'`` for ``'RetinaNet'``, ``'mmdet.RetinaNet'`` (3.x scope) or a class."""
    name = type_ if isinstance(type_, str) else getattr(type_, '__name__', str(type_))
    return name.rsplit('.', 1)[-1]


def test_settings_for_model(
    model_cfg: Mapping, test_cfg: Mapping | TestSettings | None, where: str = 'model.test_cfg'
) -> TestSettings:
    """The typed :class:`TestSettings` of a model, from its ``model`` dict and ``test_cfg``.

    The settings class of each stage is chosen from the model's head types (see
    :data:`SETTINGS_BY_HEAD_TYPE`); this is the one place where MMDetection's ``test_cfg`` dict
    is read.

    Raises:
        ConfigError: unknown keys (with the closest known one) or values of the wrong type.
    """
    if isinstance(test_cfg, TestSettings):
        return test_cfg
    test_cfg = test_cfg or {}
    if not _is_mapping(test_cfg):
        raise ConfigError(f'`{where}` must be a dict, got {test_cfg!r}')
    two_stage_keys = {'rpn', 'rcnn'} & set(test_cfg)
    if 'rpn_head' in model_cfg or 'roi_head' in model_cfg or two_stage_keys:
        roi_type = registry_type_name((model_cfg.get('roi_head') or {}).get('type', ''))
        rcnn_cls = SETTINGS_BY_HEAD_TYPE.get(roi_type, RcnnSettings)
        for key in test_cfg:
            if key not in ('rpn', 'rcnn'):
                raise unknown_key_error(key, ('rpn', 'rcnn'), where)
        rpn = parse_settings(RpnSettings, test_cfg.get('rpn'), f'{where}.rpn')
        rcnn = None
        if 'roi_head' in model_cfg or 'rcnn' in test_cfg:
            rcnn = parse_settings(rcnn_cls, test_cfg.get('rcnn'), f'{where}.rcnn')
        return TestSettings(rpn=rpn, rcnn=rcnn)
    head = model_cfg.get('bbox_head')
    if not _is_mapping(head):
        if test_cfg:
            raise ConfigError(f'`{where}` is set, but the model has no detection head')
        return TestSettings()
    head_cls = SETTINGS_BY_HEAD_TYPE.get(registry_type_name(head.get('type', '')), DenseSettings)
    return TestSettings(head=parse_settings(head_cls, test_cfg, where))


test_settings_for_model.__test__ = False  # not a pytest test, whatever its name says


def _is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# --------------------------------------------------------------------------------------------
# the model file's contract
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """How the model is fed.

    Attributes:
        names: graph inputs: ``input [B, 3, H, W]`` float32 and ``img_shape [B, 2]`` float32
            (layout ``normalized``), or ``image [B, H, W, 3]`` uint8 (layout ``bgr_uint8``).
        layout: ``normalized``: the test pipeline's output (resized, normalised, padded); outputs
            in network-input pixels. ``bgr_uint8``: decoded images as OpenCV reads them, the
            pipeline runs inside the graph (``--preprocess-in-graph``); outputs in image pixels.
        dynamic: batch (and, with ``dynamic_size``, height and width) are dynamic.
        dynamic_size: height and width are dynamic (False for fixed-size models such as SSD).
        static_shape: ``(h, w)`` of the network input when height and width are fixed.
        size_divisor: the network input's sides are multiples of it.
    """

    names: tuple[str, ...] = ('input', 'img_shape')
    layout: str = 'normalized'
    dynamic: bool = False
    dynamic_size: bool = False
    static_shape: tuple[int, int] | None = None
    size_divisor: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """Everything a backend, the evaluation or a reader needs to use a model correctly.

    Attributes:
        model_type: the registry type (``RetinaNet``, ``MaskRCNN``, ...).
        task: ``detection``, ``instance-segmentation`` or ``classification``.
        class_names: the model's classes in label order (``None`` when nobody named them).
        num_classes: the head's number of classes.
        preprocess: the test pipeline's resize / normalise / pad.
        test_cfg: the post-processing settings the model applies.
        inputs: graph inputs and shape rules (filled in at export).
        outputs: graph output names (``dets``, ``labels``, ``masks``).
        precision: ``fp32``, ``fp16`` or ``int8`` (of the exported file).
        exporter, opset: how the file was made (``None`` for an eager model).
        skip_postprocess: the file holds raw head outputs only.
        threshold_on_output_score: the final ``score_thr`` is compared with the scores the model
            outputs (not so where score factors such as FCOS's centerness multiply them after
            the threshold, or soft-NMS rescales them): then a higher threshold than the exported
            one is applied exactly after the graph.
        producer: versions of the tools that made the file.
        extra: further facts of the file (e.g. INT8 calibration), JSON values.
    """

    model_type: str
    task: str = 'detection'
    class_names: tuple[str, ...] | None = None
    num_classes: int = 0
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    test_cfg: TestSettings = field(default_factory=TestSettings)
    inputs: InputSpec = field(default_factory=InputSpec)
    outputs: tuple[str, ...] = ('dets', 'labels')
    precision: str = 'fp32'
    exporter: str | None = None
    opset: int | None = None
    skip_postprocess: bool = False
    threshold_on_output_score: bool = False
    producer: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def replace(self, **changes: Any) -> ModelSpec:
        return dataclasses.replace(self, **changes)

    @property
    def max_detections(self) -> int:
        """Rows of the padded detection outputs."""
        final = self.test_cfg.final
        return final.output_cap if final is not None else 100

    @property
    def mask_thr_binary(self) -> float:
        return getattr(self.test_cfg.final, 'mask_thr_binary', 0.5)

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dict(spec_version=SPEC_VERSION, **_to_json(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelSpec:
        """The spec written by :meth:`to_dict`; ConfigError for a layout we cannot read."""
        data = dict(data)
        version = data.pop('spec_version', None)
        if version is None:
            raise ConfigError(
                'the model file was written by an older version of this tool (no model spec in '
                'its metadata): export it again'
            )
        if version > SPEC_VERSION:
            raise ConfigError(
                f'the model file has spec version {version}, newer than this tool understands '
                f'({SPEC_VERSION}): update the tool'
            )
        return _from_json(cls, data)

    @classmethod
    def from_json(cls, text: str, source: str = 'the model file') -> ModelSpec:
        """The spec stored in ``source`` as JSON; a malformed or wrong-typed one is a
        :class:`ConfigError` naming ``source``, never a traceback."""
        try:
            data = json.loads(text)
            if not isinstance(data, Mapping):
                raise TypeError(f'the spec is a JSON {type(data).__name__}, not an object')
            return cls.from_dict(data)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise ConfigError(
                f'the model spec stored in {source} is unreadable ({type(err).__name__}: {err}): '
                'export it again'
            ) from None


def _to_json(obj: Any) -> Any:
    if isinstance(obj, StageSettings):
        return dict(kind=obj.KIND, **{f.name: _to_json(getattr(obj, f.name)) for f in fields(obj)})
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_json(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): _to_json(v) for k, v in obj.items()}
    return obj


def _from_json(cls: type, data: Any, where: str = 'spec') -> Any:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise TypeError(f'{where} must be an object, got {data!r}')
    if isinstance(cls, type) and issubclass(cls, StageSettings):
        data = dict(data)
        cls = SETTINGS_BY_KIND[data.pop('kind', cls.KIND)]
    annotations = _field_types(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            kwargs[f.name] = _decode(data[f.name], annotations[f.name], f'{where}.{f.name}')
    return cls(**kwargs)


#: the JSON values a field of each plain type accepts (a float field takes an integer)
_LEAF_TYPES = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _decode(value: Any, annotation: Any, where: str = 'spec') -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _decode(value, inner[0], where)
    if dataclasses.is_dataclass(annotation):
        return _from_json(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f'{where} must be a list, got {value!r}')
        item = args[0] if args and args[-1] is Ellipsis else Any
        return tuple(_decode(v, item, f'{where}[{i}]') for i, v in enumerate(value))
    expected = _LEAF_TYPES.get(annotation)
    wrong_bool = isinstance(value, bool) and annotation is not bool
    if expected and (not isinstance(value, expected) or wrong_bool):
        raise TypeError(f'{where} must be a {annotation.__name__}, got {value!r}')
    return value


# --------------------------------------------------------------------------------------------
# a run's settings against the ones baked into a model file
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultFilter:
    """What is applied to a model's outputs after the graph, by the shared post-processing.

    Each is the exact equivalent of a stricter setting than the one baked into the graph.

    Attributes:
        score_thr: detections scoring at or below it are dropped.
        max_per_img: only the first this many detections (by score) are kept (``None``: all).
        mask_thr_binary: mask probabilities at or above it are foreground.
    """

    score_thr: float | None = None
    max_per_img: int | None = None
    mask_thr_binary: float = 0.5


def _flatten(obj: Any, prefix: str = '') -> dict[str, Any]:
    data = _to_json(obj) if dataclasses.is_dataclass(obj) else obj
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f'{name}.'))
        else:
            flat[name] = value
    return flat


def reconcile_settings(
    baked: ModelSpec, wanted: TestSettings, model_file: str = 'the model file'
) -> ResultFilter:
    """How to run a model file whose graph has ``baked`` settings when the run asks for
    ``wanted`` (the config after ``--cfg-options``).

    A higher ``score_thr`` (where the threshold acts on the output score), a lower
    ``max_per_img`` and any ``mask_thr_binary`` are applied exactly after the graph; any other
    difference cannot be, and is an error that names the setting and says to export again.

    Raises:
        ConfigError: one line naming the first setting that differs and cannot be applied.
    """
    score_thr = max_per_img = None
    mask_thr = 0.5
    exact_threshold = baked.threshold_on_output_score
    baked = baked.test_cfg
    for part in ('head', 'rpn', 'rcnn'):
        have, want = getattr(baked, part), getattr(wanted, part)
        where = 'model.test_cfg' + ('' if part == 'head' else f'.{part}')
        if have is None and want is None:
            continue
        if have is None or want is None or have.KIND != want.KIND:
            raise ConfigError(
                f'the config describes another model than {model_file} ({where} is '
                f'{"missing" if want is None else want.KIND} in the config, '
                f'{"missing" if have is None else have.KIND} in the file)'
            )
        final = want is wanted.final
        have_flat, want_flat = _flatten(have), _flatten(want)
        for key in want_flat:
            old, new = have_flat.get(key), want_flat[key]
            if key == 'mask_thr_binary' and final:
                mask_thr = float(new)
                continue
            if old == new:
                continue
            if final and key == 'score_thr' and new > old and exact_threshold:
                score_thr = float(new)
                continue
            if final and key == 'max_per_img' and new < old:
                max_per_img = int(new)
                continue
            raise ConfigError(
                f'{where}.{key}={new} differs from the {old} exported into {model_file}, and '
                f'cannot be applied after the graph: export again with --cfg-options '
                f'{where}.{key}={new}'
            )
    return ResultFilter(score_thr=score_thr, max_per_img=max_per_img, mask_thr_binary=mask_thr)


# --------------------------------------------------------------------------------------------
# the spec inside an ONNX file (metadata_props) and next to a TensorRT engine (sidecar JSON)
# --------------------------------------------------------------------------------------------


def write_onnx_spec(model, spec: ModelSpec) -> None:
    """Store ``spec`` as JSON under :data:`METADATA_KEY` in an ``onnx.ModelProto``
    (replacing an older one)."""
    props = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.add(key=METADATA_KEY, value=spec.to_json())


def read_onnx_spec(path_or_model) -> ModelSpec | None:
    """The spec of an ONNX file or ``onnx.ModelProto``; ``None`` for a file without one (a
    foreign file, or the raw ``--skip-postprocess`` graph used by verification).

    Raises:
        BackendError: the file cannot be read.
        ConfigError: it holds metadata of an older (or newer) layout: export it again.
    """
    from .errors import BackendError

    if hasattr(path_or_model, 'metadata_props'):
        model = path_or_model
    else:
        import onnx

        try:
            model = onnx.load(str(path_or_model), load_external_data=False)
        except Exception as err:  # onnx raises DecodeError, OSError, ... for broken files
            raise BackendError(f'cannot read ONNX file {path_or_model}: {err}') from None
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                return ModelSpec.from_json(prop.value)
            except (ValueError, TypeError, KeyError) as err:
                raise ConfigError(
                    f'the model spec stored in {getattr(path_or_model, "name", path_or_model)} '
                    f'is unreadable ({type(err).__name__}: {err}): export it again'
                ) from None
    return None
