"""DETR (Carion et al., 2020): ResNet -> ChannelMapper -> transformer encoder/decoder -> DETRHead.

The data flow of one batch ``img [B, 3, H, W]`` (padded bottom/right to the largest image):

1. ``feat [B, C, h, w]``: backbone C5, projected to ``C = embed_dims`` by the neck.
2. ``mask [B, h, w]`` (True: padding): each image's real ``img_shape`` marked in an ``H x W``
   mask and resized to ``h x w`` by nearest-neighbour interpolation, exactly as MMDetection does.
   The mask is what makes a batch behave like its images alone: the encoder and the decoder's
   cross-attention never attend to padded cells, and the positional encoding counts real cells
   only. (The backbone itself sees the padding: see the note below.)
3. ``pos [B, C, h, w]``: :class:`SinePositionalEncoding` of the mask.
4. Encoder over the ``h * w`` tokens, decoder with ``num_queries`` learned query positions.
5. :class:`DETRHead`: per query, class logits and a box relative to the real image; the best
   ``max_per_img`` are the detections.

:meth:`DETR.predict` is the eager reference (MMDetection's code path, ``F.interpolate`` of the
full-size mask); :meth:`DETR.forward_deploy` is the exported graph. It computes the same mask
from the ``img_shape`` graph input with float32 arithmetic that reproduces PyTorch's
nearest-neighbour source index exactly (ONNX ``Resize`` rounds some of those indices
differently), one row and one column vector per image instead of an ``H x W`` image.

Batches: MMDetection's semantics (the default) are not invariant to padding. The backbone's
windows along an image's right and bottom border reach into the padding, which alone they would
see as zero padding at every layer, and the resized mask can keep one more feature row or column
than the image alone has. So an image's detections in a padded batch differ a little from its
detections alone (MMDetection evaluates with batch 1). ``test_cfg.batch_invariant=True`` removes
both differences exactly: the input of every windowed backbone and neck layer is cleared outside
each image's own extent at that layer's stride (zero for convolutions, ``-inf`` for max-pooling,
what the image alone is padded with), and the transformer mask is the image's own feature extent.
Each image of a batch then gives its batch-1 detections (``tests/test_detr_batch.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.traced_shape import traced_shape
from ...registry import MODELS
from ...spec import TestSettings, test_settings_for_model
from ..layers.detr_transformer import (
    DetrTransformerDecoder,
    DetrTransformerEncoder,
    SinePositionalEncoding,
)
from .base import BaseDetector
from .detr_compat import detr_config_from_2x, detr_keys_any_to_3x


def without_type(cfg: Mapping | None, expected: str, where: str) -> dict:
    """A 3.x sub-config (plain dict, an optional ``type`` naming ``expected``) as arguments."""
    cfg = dict(cfg or {})
    found = str(cfg.pop('type', expected)).rsplit('.', 1)[-1]
    if found != expected:
        raise ConfigError(f'`model.{where}.type` is {found!r}; DETR uses {expected!r}')
    return cfg


# --------------------------------------------------------------------------------------------
# the padding mask
# --------------------------------------------------------------------------------------------


def padding_mask_eager(img_metas: list[dict], input_hw, feat_hw, device) -> Tensor:
    """MMDetection's mask: 1 outside each image's ``img_shape`` at input resolution, resized to
    ``feat_hw`` with ``F.interpolate`` (nearest) -> ``[B, h, w]`` bool, True on padding."""
    masks = torch.ones(len(img_metas), *input_hw, device=device)
    for i, meta in enumerate(img_metas):
        img_h, img_w = meta['img_shape'][:2]
        masks[i, :img_h, :img_w] = 0
    return F.interpolate(masks.unsqueeze(1), size=tuple(feat_hw)).to(torch.bool).squeeze(1)


def size_f32(x: Tensor, dim: int) -> Tensor:
    """``x.shape[dim]`` as a float32 scalar tensor that stays dynamic in both exporters."""
    shape = traced_shape(x)
    if shape is not None:
        return shape[dim].to(torch.float32)
    return torch.scalar_tensor(x.shape[dim], dtype=torch.float32, device=x.device)


def _real_cells(real_len: Tensor, input_len: Tensor, feat: Tensor, dim: int) -> Tensor:
    """Which cells along ``feat``'s axis ``dim`` the nearest-neighbour resize takes from inside
    the real image: ``[B, n]`` bool.

    PyTorch's nearest source index of output cell ``i`` is ``floor(i * s)`` with the float32
    scale ``s = input_len / n``; it lies inside the image when ``i * s < real_len`` (the floor
    changes nothing for an integer bound). Computed here with the same float32 operations.

    Args:
        real_len: ``[B, 1]`` float, the real image's length along the axis.
        input_len: float32 scalar, the padded input's length.
    """
    scale = input_len / size_f32(feat, dim)
    cells = torch.arange(feat.shape[dim], device=feat.device, dtype=torch.float32)
    return cells * scale < real_len


def padding_mask_deploy(img_shape: Tensor, img: Tensor, feat: Tensor) -> Tensor:
    """The mask of :func:`padding_mask_eager`, traceable, from ``img_shape [B, 2]`` float
    ``(h, w)``, the padded input ``img [B, 3, H, W]`` and ``feat [B, C, h, w]`` -> ``[B, h, w]``
    bool (True on padding). Exactly equal for every size (``tests/test_detr.py``)."""
    rows = _real_cells(img_shape[:, 0:1], size_f32(img, 2), feat, 2)  # [B, h]
    cols = _real_cells(img_shape[:, 1:2], size_f32(img, 3), feat, 3)  # [B, w]
    return ~(rows.unsqueeze(2) & cols.unsqueeze(1))


def inside_images(image_hw: Tensor, x: Tensor, stride: int) -> Tensor:
    """``[B, 1, h, w]`` bool: the cells of ``x [B, C, h, w]``, a map at ``stride`` from the
    input, inside each image's own extent ``ceil(H / stride) x ceil(W / stride)`` (the size of
    that map for the image alone), from ``image_hw [B, 2]`` float ``(H, W)``."""
    extent = torch.ceil(image_hw / stride)  # exact: integers divided by a power of two
    rows = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32) < extent[:, 0:1]
    cols = torch.arange(x.shape[-1], device=x.device, dtype=torch.float32) < extent[:, 1:2]
    return (rows.unsqueeze(2) & cols.unsqueeze(1)).unsqueeze(1)


def _kernel_area(layer: nn.Module) -> int:
    size = layer.kernel_size
    return size[0] * size[1] if isinstance(size, tuple) else size * size


class ImageExtents:
    """The real ``(h, w) [B, 2]`` of each image while a batch-invariant forward runs, else None.

    Shared by the detector and its layer hooks (a deep copy of the model copies it once)."""

    image_hw: Tensor | None = None


def _clear_padding(
    extents: ImageExtents, stride: int, fill: float, layer: nn.Module, args: tuple
) -> tuple | None:
    """Forward pre-hook of a layer at ``stride``: its input is ``fill`` outside each image."""
    if extents.image_hw is None:
        return None
    x = args[0]
    return (torch.where(inside_images(extents.image_hw, x, stride), x, fill), *args[1:])


def _clear_output(
    extents: ImageExtents, stride: int, layer: nn.Module, args: tuple, output: Tensor
) -> Tensor | None:
    """Forward hook of a max-pooling at output ``stride``: zero outside each image, so the
    ``-inf`` of its input stops there (a 1 x 1 layer would turn it into ``inf - inf = NaN``,
    and attention spreads NaN from masked cells too: ``0 * NaN``)."""
    if extents.image_hw is None:
        return None
    return torch.where(inside_images(extents.image_hw, output, stride), output, 0.0)


# --------------------------------------------------------------------------------------------
# the detector
# --------------------------------------------------------------------------------------------


@MODELS.register_module()
class DETR(BaseDetector):
    """MMDetection's ``DETR`` with the 3.x module layout.

    Children: ``backbone``, ``neck`` (``ChannelMapper``), ``bbox_head`` (:class:`DETRHead`),
    ``positional_encoding``, ``encoder``, ``decoder``, ``query_embedding [num_queries, C]``.

    Both config layouts build it:

    * 3.x: ``neck``, ``encoder``, ``decoder``, ``positional_encoding`` and ``num_queries`` on the
      detector, ``bbox_head=dict(type='DETRHead', num_classes, embed_dims)``;
    * 2.x: everything inside ``bbox_head`` (``transformer=dict(type='Transformer', ...)``,
      ``positional_encoding``, ``in_channels``, ``num_query``), translated by
      :func:`~deploy.models.detectors.detr_compat.detr_config_from_2x`.

    Checkpoints of either layout load (2.x and pre-2.12 keys are renamed in
    :meth:`_load_from_state_dict`). ``data_preprocessor``, ``pretrained``, ``init_cfg`` and
    ``train_cfg`` are accepted for config compatibility.
    """

    def __init__(
        self,
        backbone: dict,
        bbox_head: dict,
        neck: dict | None = None,
        encoder: dict | None = None,
        decoder: dict | None = None,
        positional_encoding: dict | None = None,
        num_queries: int = 100,
        train_cfg: dict | None = None,
        test_cfg: TestSettings | dict | None = None,
        data_preprocessor: dict | None = None,
        pretrained: str | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        bbox_head = dict(bbox_head)
        if 'transformer' in bbox_head:  # MMDetection 2.x layout
            if any(cfg is not None for cfg in (neck, encoder, decoder, positional_encoding)):
                raise ConfigError(
                    'DETR config mixes layouts: `model.bbox_head.transformer` (2.x) together '
                    'with `model.neck`/`encoder`/`decoder`/`positional_encoding` (3.x)'
                )
            layout = detr_config_from_2x(bbox_head)
            neck, encoder, decoder = layout['neck'], layout['encoder'], layout['decoder']
            positional_encoding = layout['positional_encoding']
            num_queries, bbox_head = layout['num_queries'], layout['bbox_head']
        if neck is None or encoder is None or decoder is None:
            raise ConfigError(
                'DETR needs `model.neck`, `model.encoder` and `model.decoder` (3.x layout) or '
                '`model.bbox_head.transformer` (2.x layout)'
            )
        # Typed settings from the model spec; a raw dict (a model built by hand) is checked here.
        test_cfg = test_settings_for_model(dict(bbox_head=bbox_head), test_cfg)

        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck)
        bbox_head.update(train_cfg=train_cfg, test_cfg=test_cfg.head)
        self.bbox_head = MODELS.build(bbox_head)
        self.positional_encoding = SinePositionalEncoding(
            **without_type(positional_encoding, 'SinePositionalEncoding', 'positional_encoding')
        )
        self.encoder = DetrTransformerEncoder(
            **without_type(encoder, 'DetrTransformerEncoder', 'encoder')
        )
        self.decoder = DetrTransformerDecoder(
            **without_type(decoder, 'DetrTransformerDecoder', 'decoder')
        )
        self.embed_dims = self.encoder.embed_dims
        if 2 * self.positional_encoding.num_feats != self.embed_dims:
            raise ConfigError(
                f'DETR: positional_encoding.num_feats ({self.positional_encoding.num_feats}) '
                f'must be half of embed_dims ({self.embed_dims})'
            )
        self.query_embedding = nn.Embedding(num_queries, self.embed_dims)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self._extents = ImageExtents()
        self._feature_stride = 32
        if test_cfg.head.batch_invariant:
            self._make_padding_invisible()

    @property
    def num_queries(self) -> int:
        return self.query_embedding.num_embeddings

    # -- the network ---------------------------------------------------------------------------
    def forward_transformer(self, feat: Tensor, mask: Tensor) -> Tensor:
        """``feat [B, C, h, w]`` and its padding ``mask [B, h, w]`` -> the decoder's last
        output ``[B, Q, C]`` (post-normed)."""
        batch = feat.shape[0]
        pos = self.positional_encoding(mask).flatten(2).transpose(1, 2)  # [B, h*w, C]
        tokens = feat.flatten(2).transpose(1, 2)  # [B, h*w, C]
        mask = mask.flatten(1)  # [B, h*w]
        memory = self.encoder(tokens, pos, mask)
        query_pos = self.query_embedding.weight.unsqueeze(0).expand(batch, -1, -1)
        query = torch.zeros_like(query_pos)
        return self.decoder(query, memory, query_pos, pos, mask)

    def _feature(self, img: Tensor, image_hw: Tensor | None = None) -> Tensor:
        """The one feature map ``[B, C, h, w]`` (backbone ``out_indices=(3,)``, then the neck);
        with ``batch_invariant``, blind to the padding around each image of ``image_hw``."""
        if not self.batch_invariant:
            return self.extract_feat(img)[-1]
        self._extents.image_hw = image_hw
        try:
            return self.extract_feat(img)[-1]
        finally:
            self._extents.image_hw = None

    @property
    def batch_invariant(self) -> bool:
        return self.test_cfg.head.batch_invariant

    # -- the three ways to run ---------------------------------------------------------------------
    def predict(self, img: Tensor, img_metas: list[dict]) -> list[dict]:
        image_hw = img.new_tensor([m['img_shape'][:2] for m in img_metas])
        feat = self._feature(img, image_hw)
        if self.batch_invariant:
            mask = ~inside_images(image_hw, feat, self._feature_stride).squeeze(1)
        else:
            mask = padding_mask_eager(img_metas, img.shape[-2:], feat.shape[-2:], img.device)
        cls_scores, bbox_preds = self.bbox_head(self.forward_transformer(feat, mask))
        return self.bbox_head.predict_by_feat(cls_scores, bbox_preds, img_metas)

    def forward_deploy(self, img: Tensor, img_shape: Tensor) -> tuple[Tensor, Tensor]:
        feat = self._feature(img, img_shape)
        if self.batch_invariant:
            mask = ~inside_images(img_shape, feat, self._feature_stride).squeeze(1)
        else:
            mask = padding_mask_deploy(img_shape, img, feat)
        cls_scores, bbox_preds = self.bbox_head(self.forward_transformer(feat, mask))
        return self.bbox_head.predict_by_feat_deploy(cls_scores, bbox_preds, img_shape)

    def forward_raw(self, img: Tensor) -> dict[str, Tensor]:
        """The head's ``cls_score [B, Q, C']`` (logits) and ``bbox_pred [B, Q, 4]`` with every
        pixel of ``img`` real (no ``img_shape`` input, so no padding mask)."""
        feat = self._feature(img)
        mask = feat.new_zeros((feat.shape[0], *feat.shape[-2:]), dtype=torch.bool)
        cls_scores, bbox_preds = self.bbox_head(self.forward_transformer(feat, mask))
        return dict(cls_score=cls_scores, bbox_pred=bbox_preds)

    # -- test_cfg.batch_invariant ------------------------------------------------------------------
    def _make_padding_invisible(self) -> None:
        """Clear the input of every windowed layer of the backbone and neck outside each image
        (forward pre-hooks, active while ``self._extents`` holds the batch's image sizes), and
        the output of max-pooling (whose input is cleared with ``-inf``).

        A probe finds each layer's stride from the input and checks the size rule the masks
        rely on: every map at stride ``s`` of an ``H x W`` image is ``ceil(H / s) x ceil(W / s)``
        (true of ResNet). 1 x 1 layers need no mask: they never look beyond their own cell.

        Raises:
            ConfigError: a backbone or neck the rule does not hold for, or with average pooling
                (its partial border windows average over other cells than the image alone's).
        """
        layers = [
            m
            for part in (self.backbone, self.neck)
            for m in part.modules()
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and _kernel_area(m) > 1
        ]
        if any(isinstance(m, nn.AvgPool2d) for m in layers):
            raise ConfigError(
                'test_cfg.batch_invariant=True does not support average pooling in the backbone '
                '(e.g. ResNet avg_down)'
            )
        seen: dict[nn.Module, list] = {m: [] for m in layers}  # (input, output) shapes
        probes = [m.register_forward_hook(self._record_shapes(seen)) for m in layers]
        feats = []
        modes = {m: m.training for m in self.modules()}  # a new model is in training mode
        try:
            self.eval()  # leave BatchNorm statistics alone
            with torch.no_grad():
                for size in ((256, 256), (97, 75)):
                    feats.append(self.extract_feat(torch.zeros(1, 3, *size))[-1].shape)
        finally:
            for probe in probes:
                probe.remove()
            for module, mode in modes.items():
                module.training = mode
        # stride of each layer's input and output from the input image, from the 256 x 256 probe
        strides = {m: (256 // s[0][0][-2], 256 // s[0][1][-2]) for m, s in seen.items()}
        self._feature_stride = 256 // feats[0][-2]
        all_strides = [s for pair in strides.values() for s in pair] + [self._feature_stride]
        # the 97 x 75 probe: every layer's input and output, then the feature map
        found = [tuple(shape[-2:]) for shapes in seen.values() for shape in shapes[1]]
        found.append(tuple(feats[1][-2:]))
        if [(-(-97 // s), -(-75 // s)) for s in all_strides] != found:
            raise ConfigError(
                'test_cfg.batch_invariant=True needs a backbone whose maps at stride s of an '
                "H x W image are ceil(H / s) x ceil(W / s) (as ResNet's are)"
            )
        for layer, (stride, out_stride) in strides.items():
            if isinstance(layer, nn.MaxPool2d):
                hook = partial(_clear_padding, self._extents, stride, float('-inf'))
                layer.register_forward_pre_hook(hook)
                layer.register_forward_hook(partial(_clear_output, self._extents, out_stride))
            else:
                layer.register_forward_pre_hook(partial(_clear_padding, self._extents, stride, 0.0))

    @staticmethod
    def _record_shapes(seen: dict):
        def record(layer: nn.Module, args: tuple, output: Tensor) -> None:
            seen[layer].append((args[0].shape, output.shape))

        return record

    # -- checkpoints of other MMDetection versions ------------------------------------------------
    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # The root sees every key before its children do: rename 2.x keys to this layout here.
        converted = detr_keys_any_to_3x(state_dict, prefix)
        if converted is not state_dict:
            state_dict.clear()
            state_dict.update(converted)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
