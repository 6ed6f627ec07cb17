"""DINO (Zhang et al., 2023) as MMDetection 3.x builds it: ResNet -> ChannelMapper (4 levels) ->
deformable encoder -> two-stage query selection -> DINO decoder with iterative box refinement ->
:class:`~deploy.models.dense_heads.DINOHead`.

The data flow of one batch ``img [B, 3, H, W]`` (padded bottom/right to the largest image):

1. ``feats``: four ``[B, C, h_l, w_l]`` maps at strides 8, 16, 32, 64.
2. Per level, the padding mask ``[B, h_l, w_l]`` from each image's real ``img_shape`` (the full
   size mask resized by nearest neighbour, exactly as MMDetection does; in the graph from the
   ``img_shape`` input, as for DETR) and each image's valid ratios (its share of the level).
3. Sine positions of the mask plus ``level_embed``; all levels flattened into one sequence.
4. Encoder: multi-scale deformable self-attention around each cell centre.
5. Query selection: each memory token's proposal (its cell, size ``0.05 * 2^l``; padding and
   border cells invalid), the encoder branches of the head score and refine it, and the
   ``num_queries`` best tokens (by their best class logit) give the initial reference boxes.
   The content queries are the learned ``query_embedding`` rows, in rank order.
6. Decoder: self-attention, deformable cross-attention around each box, box refinement.
7. Head: the top ``max_per_img`` (query, class) pairs of the last layer.

Batches: as for DETR (:mod:`deploy.models.detectors.detr`), MMDetection's semantics depend on
the padding (the backbone's border windows, the resized mask's extra cells, and the query
positions, which DINO encodes relative to the padded level 0). ``test_cfg.batch_invariant=True``
removes all three: the backbone and neck never see the padding, the masks are each image's own
feature extent, and the query positions are encoded from the boxes relative to the image.

Deformable DETR shares everything but the decoder and the query selection and is not built
here yet. CdnQueryGenerator (denoising queries) is training-only; its ``label_embedding`` is
kept so checkpoints load with their keys.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.topk import clamped_topk
from ...registry import MODELS
from ...spec import TestSettings, test_settings_for_model
from ..layers.deformable_transformer import (
    DeformableDetrTransformerEncoder,
    DinoTransformerDecoder,
    Levels,
)
from ..layers.detr_transformer import SinePositionalEncoding
from .base import BaseDetector
from .detr import (
    DETR,
    ImageExtents,
    inside_images,
    padding_mask_deploy,
    padding_mask_eager,
    size_f32,
    without_type,
)


class CdnQueryGenerator(nn.Module):
    """Training-only denoising queries; holds ``label_embedding [num_classes, C]`` so that
    checkpoints load with MMDetection's keys."""

    def __init__(
        self,
        num_classes: int,
        embed_dims: int,
        num_matching_queries: int,
        label_noise_scale: float = 0.5,
        box_noise_scale: float = 1.0,
        group_cfg: dict | None = None,
    ):
        super().__init__()
        self.label_embedding = nn.Embedding(num_classes, embed_dims)


def _group_norm_per_image(
    extents: ImageExtents, stride: int, norm: nn.GroupNorm, args: tuple, output: Tensor
) -> Tensor | None:
    """Forward hook of a GroupNorm at ``stride``: while a batch-invariant forward runs, its
    output with the statistics of each image's own cells (what the image alone gets)."""
    if extents.image_hw is None:
        return None
    x = args[0]
    inside = inside_images(extents.image_hw, x, stride).to(x.dtype)  # [B, 1, h, w]
    grouped = x.unflatten(1, (norm.num_groups, -1))  # [B, G, C / G, h, w]
    weight = inside.unsqueeze(1)
    count = weight.sum((2, 3, 4), keepdim=True) * grouped.shape[2]
    mean = (grouped * weight).sum((2, 3, 4), keepdim=True) / count
    var = (((grouped - mean) * weight) ** 2).sum((2, 3, 4), keepdim=True) / count
    normed = ((grouped - mean) / torch.sqrt(var + norm.eps)).flatten(1, 2)
    if norm.affine:
        normed = normed * norm.weight[:, None, None] + norm.bias[:, None, None]
    return normed


def valid_cells(mask: Tensor) -> Tensor:
    """The real columns and rows of ``mask [B, h, w]`` (True on padding), counted along its
    first row and column as MMDetection does -> ``[B, 2]`` float ``(w, h)``."""
    cols = (~mask[:, 0, :]).sum(1)
    rows = (~mask[:, :, 0]).sum(1)
    return torch.stack([cols, rows], -1).to(torch.float32)


@MODELS.register_module()
class DINO(DETR):
    """MMDetection 3.x's ``DINO`` (``as_two_stage`` and ``with_box_refine`` both True).

    Children ``backbone``, ``neck``, ``bbox_head``, ``positional_encoding``, ``encoder``,
    ``decoder``, ``query_embedding``, ``memory_trans_fc``, ``memory_trans_norm``,
    ``dn_query_generator`` and the parameter ``level_embed [L, C]``: MMDetection's keys.
    Reuses DETR's padding masks and its ``batch_invariant`` backbone hooks.
    """

    #: the exporter ``tools/pytorch2onnx.py`` uses without ``--exporter``: torch.export's
    #: symbolic shapes make the dynamic dynamo export of DINO R50 take minutes on 2 cores
    #: against under a minute for TorchScript, with the same parity (docs/benchmark.md)
    default_exporter = 'torchscript'
    #: a dynamic export traces a crop of the example this large: the graph is the same for any
    #: size, and a full-size forward pass was most of the export
    dynamic_trace_size = (320, 320)

    def __init__(
        self,
        backbone: dict,
        neck: dict,
        encoder: dict,
        decoder: dict,
        bbox_head: dict,
        positional_encoding: dict,
        num_queries: int = 900,
        with_box_refine: bool = True,
        as_two_stage: bool = True,
        num_feature_levels: int = 4,
        dn_cfg: dict | None = None,
        train_cfg: dict | None = None,
        test_cfg: TestSettings | dict | None = None,
        data_preprocessor: dict | None = None,
        pretrained: str | None = None,
        init_cfg: dict | None = None,
    ):
        BaseDetector.__init__(self)  # DETR's modules are not DINO's
        if not (with_box_refine and as_two_stage):
            raise ConfigError('DINO needs with_box_refine=True and as_two_stage=True')
        test_cfg = test_settings_for_model(dict(bbox_head=bbox_head), test_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck)
        self.encoder = DeformableDetrTransformerEncoder(
            **without_type(encoder, 'DeformableDetrTransformerEncoder', 'encoder')
        )
        self.decoder = DinoTransformerDecoder(
            **without_type(decoder, 'DinoTransformerDecoder', 'decoder')
        )
        self.positional_encoding = SinePositionalEncoding(
            **without_type(positional_encoding, 'SinePositionalEncoding', 'positional_encoding')
        )
        dims = self.embed_dims = self.encoder.embed_dims
        head = dict(bbox_head)
        head.update(
            num_pred_layer=len(self.decoder.layers) + 1,
            as_two_stage=True,
            share_pred_layer=False,
            train_cfg=train_cfg,
            test_cfg=test_cfg.head,
        )
        self.bbox_head = MODELS.build(head)
        self.level_embed = nn.Parameter(torch.zeros(num_feature_levels, dims))
        self.query_embedding = nn.Embedding(num_queries, dims)
        self.memory_trans_fc = nn.Linear(dims, dims)
        self.memory_trans_norm = nn.LayerNorm(dims)
        self.dn_query_generator = CdnQueryGenerator(
            self.bbox_head.num_classes, dims, num_queries, **dict(dn_cfg or {})
        )
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self._extents = ImageExtents()
        self._level_strides: list[int] = []
        if test_cfg.head.batch_invariant:
            self._make_padding_invisible()
            self._level_strides = self._normalise_per_image()

    def _normalise_per_image(self) -> list[int]:
        """``batch_invariant``: every GroupNorm of the backbone and neck takes its statistics
        over each image's own cells (a padded batch's would include the padding). Returns the
        stride of each output level, found with a probe like the layer strides."""
        norms = [m for part in (self.backbone, self.neck) for m in part.modules()]
        norms = [m for m in norms if isinstance(m, nn.GroupNorm)]
        heights: dict[nn.Module, int] = {}

        def record(norm: nn.Module, args: tuple, output: Tensor) -> None:
            heights[norm] = output.shape[-2]

        probes = [m.register_forward_hook(record) for m in norms]
        modes = {m: m.training for m in self.modules()}
        try:
            self.eval()
            with torch.no_grad():
                feats = self.extract_feat(torch.zeros(1, 3, 256, 256))
        finally:
            for probe in probes:
                probe.remove()
            for module, mode in modes.items():
                module.training = mode
        for norm, height in heights.items():
            norm.register_forward_hook(partial(_group_norm_per_image, self._extents, 256 // height))
        return [256 // f.shape[-2] for f in feats]

    # -- the network ---------------------------------------------------------------------------
    def forward_transformer(
        self, feats: list[Tensor], masks: list[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Levels ``[B, C, h_l, w_l]`` and their padding masks ``[B, h_l, w_l]`` -> the head's
        class logits ``[B, Q, num_classes]`` and boxes ``[B, Q, 4]``, and the sequence position
        of the encoder token each query was selected from ``[B, Q]``, queries in rank order."""
        levels = Levels(
            sizes=[tuple(f.shape[-2:]) for f in feats],
            wh=torch.stack([torch.stack([size_f32(f, 3), size_f32(f, 2)]) for f in feats]),
        )
        cells = torch.stack([valid_cells(m) for m in masks], 1)  # [B, L, 2]
        ratios = cells / levels.wh  # MMDetection's valid ratios
        pos = [
            self.positional_encoding(m).flatten(2).transpose(1, 2) + self.level_embed[i]
            for i, m in enumerate(masks)
        ]
        tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1)  # [B, N, C]
        mask = torch.cat([m.flatten(1) for m in masks], 1)  # [B, N]
        memory = self.encoder(tokens, torch.cat(pos, 1), levels, ratios, mask)
        boxes, selected = self._select_queries(memory, mask, levels, cells)
        # rank 0..Q-1 from a tensor, not a size: Q = min(num_queries, N) stays computed in
        # either exporter's graph
        rank = torch.ones_like(selected[0]).cumsum(0) - 1
        query = self.query_embedding.weight[rank].unsqueeze(0).expand(boxes.shape[0], -1, -1)
        hidden, entering = self.decoder(
            query,
            memory,
            boxes,
            levels,
            ratios,
            mask,
            self.bbox_head.reg_branches,
            self.batch_invariant,
        )
        return (*self.bbox_head(hidden, entering), selected)

    def _select_queries(
        self, memory: Tensor, mask: Tensor, levels: Levels, cells: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Two-stage query selection from the memory ``[B, N, C]``, its padding ``mask [B, N]``
        and each image's real cells per level ``cells [B, L, 2]`` ``(w, h)`` -> the initial
        reference boxes ``[B, Q, 4]`` (sigmoid) and the selected tokens' positions ``[B, Q]``."""
        proposals = []
        for level, (h, w) in enumerate(levels.sizes):
            wh = cells[:, level]  # [B, 2]
            ys = torch.arange(h, dtype=torch.float32, device=memory.device) + 0.5
            xs = torch.arange(w, dtype=torch.float32, device=memory.device) + 0.5
            cy = (ys[None, :, None] / wh[:, 1, None, None]).expand(-1, -1, w)
            cx = (xs[None, None, :] / wh[:, 0, None, None]).expand(-1, h, -1)
            size = torch.full_like(cx, 0.05 * 2.0**level)
            proposals.append(torch.stack([cx, cy, size, size], -1).flatten(1, 2))
        proposal = torch.cat(proposals, 1)  # [B, N, 4]
        inside = (proposal > 0.01) & (proposal < 0.99)
        valid = (inside.sum(-1, keepdim=True) == 4) & ~mask[..., None]
        proposal = torch.log(proposal / (1 - proposal)).masked_fill(~valid, float('inf'))
        selected = self.memory_trans_norm(self.memory_trans_fc(memory.masked_fill(~valid, 0.0)))
        encoder_layer = len(self.decoder.layers)
        logits = self.bbox_head.cls_branches[encoder_layer](selected)
        box_logits = self.bbox_head.reg_branches[encoder_layer](selected) + proposal
        scores = logits.max(-1)[0]
        if self.batch_invariant:  # padding is no candidate (MMDetection ranks it as invalid)
            scores = scores.masked_fill(mask, float('-inf'))
        _, index = clamped_topk(scores, self.num_queries, dim=1)
        picked = torch.gather(box_logits, 1, index.unsqueeze(-1).expand(-1, -1, 4))
        return picked.sigmoid(), index

    def _features(self, img: Tensor, image_hw: Tensor | None = None) -> list[Tensor]:
        if not self.batch_invariant:
            return list(self.extract_feat(img))
        self._extents.image_hw = image_hw
        try:
            return list(self.extract_feat(img))
        finally:
            self._extents.image_hw = None

    def _invariant_masks(self, image_hw: Tensor, feats: list[Tensor]) -> list[Tensor]:
        return [
            ~inside_images(image_hw, f, s).squeeze(1) for f, s in zip(feats, self._level_strides)
        ]

    # -- the three ways to run ---------------------------------------------------------------------
    def predict(self, img: Tensor, img_metas: list[dict]) -> list[dict]:
        image_hw = img.new_tensor([m['img_shape'][:2] for m in img_metas])
        feats = self._features(img, image_hw)
        if self.batch_invariant:
            masks = self._invariant_masks(image_hw, feats)
        else:
            masks = [
                padding_mask_eager(img_metas, img.shape[-2:], f.shape[-2:], img.device)
                for f in feats
            ]
        cls_scores, bbox_preds, _ = self.forward_transformer(feats, masks)
        return self.bbox_head.predict_by_feat(cls_scores, bbox_preds, img_metas)

    def forward_deploy(self, img: Tensor, img_shape: Tensor) -> tuple[Tensor, Tensor]:
        feats = self._features(img, img_shape)
        if self.batch_invariant:
            masks = self._invariant_masks(img_shape, feats)
        else:
            masks = [padding_mask_deploy(img_shape, img, f) for f in feats]
        cls_scores, bbox_preds, _ = self.forward_transformer(feats, masks)
        return self.bbox_head.predict_by_feat_deploy(cls_scores, bbox_preds, img_shape)

    def forward_raw(self, img: Tensor) -> dict[str, Tensor]:
        """The head's ``cls_score [B, Q, C]`` (logits) and ``bbox_pred [B, Q, 4]`` with every
        pixel of ``img`` real (no padding mask).

        The queries are listed by the sequence position of the token each was selected from,
        not by rank: float drift between runtimes can swap the ranks of two tokens whose
        encoder scores tie within rounding, which would swap rows here while the detections
        (a set) stay the same (see docs/detr.md, DINO)."""
        feats = self._features(img)
        masks = [f.new_zeros((f.shape[0], *f.shape[-2:]), dtype=torch.bool) for f in feats]
        cls_scores, bbox_preds, tokens = self.forward_transformer(feats, masks)
        order = tokens.argsort(dim=1)
        return dict(
            cls_score=cls_scores.gather(1, order[..., None].expand_as(cls_scores)),
            bbox_pred=bbox_preds.gather(1, order[..., None].expand_as(bbox_preds)),
        )

    def _load_from_state_dict(self, *args, **kwargs):
        # DINO has one checkpoint layout (3.x): none of DETR's 2.x renaming applies.
        nn.Module._load_from_state_dict(self, *args, **kwargs)
