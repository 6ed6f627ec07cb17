"""The deformable transformer of Deformable DETR and DINO (MMDetection 3.x): MMCV's
``MultiScaleDeformableAttention``, the post-norm encoder and decoder layers, DINO's decoder with
iterative box refinement, and the sine encoding of box coordinates.

Every tensor is batch-first. The levels of the encoder sequence travel as :class:`Levels`: the
``(h, w)`` of each level (Python ints in eager mode, symbolic sizes under ``torch.export``) and
the same sizes as a float tensor, so the graph stays dynamic in height and width.

Dropout is accepted in every config for compatibility and does nothing: the zoo only infers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.ms_deform_attn import multi_scale_deformable_attention
from .detr_transformer import FFN, MultiheadAttention
from .norm import build_norm_layer

__all__ = [
    'DeformableDetrTransformerDecoderLayer',
    'DeformableDetrTransformerEncoder',
    'DeformableDetrTransformerEncoderLayer',
    'DinoTransformerDecoder',
    'Levels',
    'MLP',
    'MultiScaleDeformableAttention',
    'coordinate_to_encoding',
    'inverse_sigmoid',
]


@dataclass(frozen=True)
class Levels:
    """The feature levels of a flattened encoder sequence.

    Attributes:
        sizes: ``(h, w)`` of each level, in sequence order.
        wh: ``[L, 2]`` float32, ``(w, h)`` of each level (sampling offsets are in level pixels).
    """

    sizes: list[tuple[int, int]]
    wh: Tensor

    def split(self, x: Tensor) -> list[Tensor]:
        """``x [B, N, ...]`` -> one ``[B, h * w, ...]`` part per level."""
        return list(x.split([h * w for h, w in self.sizes], dim=1))


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """MMDetection's ``inverse_sigmoid``: ``log(x / (1 - x))`` with both clamped to ``>= eps``."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def coordinate_to_encoding(
    coords: Tensor, num_feats: int = 128, temperature: float = 10000, scale: float = 2 * math.pi
) -> Tensor:
    """Sine encoding of normalised ``(x, y)`` or ``(cx, cy, w, h)`` ``[..., 2 | 4]`` ->
    ``[..., num_feats * (2 | 4)]``, the parts in the order ``y, x(, w, h)``, each interleaving
    sin of the even and cos of the odd frequencies."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)

    def encode(values: Tensor) -> Tensor:
        pos = (values * scale)[..., None] / dim_t
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    parts = [encode(coords[..., 1]), encode(coords[..., 0])]
    if coords.shape[-1] == 4:
        parts += [encode(coords[..., 2]), encode(coords[..., 3])]
    return torch.cat(parts, dim=-1)


class MultiScaleDeformableAttention(nn.Module):
    """MMCV's ``MultiScaleDeformableAttention``: each query samples ``num_points`` places on each
    of ``num_levels`` value maps per head, around its reference point, and sums them with
    softmax weights (over all levels and points of a head); ``output_proj`` plus the residual.

    Children ``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``.

    Args:
        embed_dims: channels ``C``.
        num_heads: heads (``C`` must be a multiple).
        num_levels: feature levels.
        num_points: sampling points per head and level.
        batch_first: must be True (MMDetection 3.x sets it for every DETR layer).
        value_proj_ratio: must be 1.0.
        im2col_step, dropout, norm_cfg, init_cfg: CUDA kernel / training settings, unused.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        im2col_step: int = 64,
        dropout: float = 0.1,
        batch_first: bool = True,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
        value_proj_ratio: float = 1.0,
    ):
        super().__init__()
        if embed_dims % num_heads:
            raise ConfigError(
                f'MultiScaleDeformableAttention: {embed_dims} dims, {num_heads} heads'
            )
        if not batch_first or norm_cfg is not None or value_proj_ratio != 1.0:
            raise ConfigError(
                'MultiScaleDeformableAttention: only batch_first=True, norm_cfg=None and '
                'value_proj_ratio=1.0 are supported'
            )
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        samples = num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(embed_dims, samples * 2)
        self.attention_weights = nn.Linear(embed_dims, samples)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        levels: Levels,
        key_padding_mask: Tensor | None,
    ) -> Tensor:
        """Deformable attention with the residual.

        Args:
            query: ``[B, Q, C]``; ``query + query_pos`` predicts offsets and weights.
            value: the flattened levels ``[B, N, C]``.
            reference_points: ``[B, Q, L, 2]`` normalised points, or ``[B, Q, L, 4]`` boxes
                ``(cx, cy, w, h)`` (offsets then scale with the box).
            levels: the levels of ``value``.
            key_padding_mask: ``[B, N]`` bool, True where ``value`` is padding (read as zero).

        Returns:
            ``[B, Q, C]``.
        """
        batch, queries, _ = query.shape
        heads, dims = self.num_heads, self.embed_dims // self.num_heads
        shape = (batch, queries, heads, self.num_levels, self.num_points)
        steered = query + query_pos
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        maps = [
            part.view(batch, h, w, heads, dims).permute(0, 3, 4, 1, 2).flatten(0, 1)
            for part, (h, w) in zip(levels.split(value), levels.sizes)
        ]  # [B * M, D, h, w] per level
        offsets = self.sampling_offsets(steered).view(*shape, 2)
        weights = self.attention_weights(steered).view(batch, queries, heads, -1).softmax(-1)
        refs = reference_points[:, :, None, :, None]  # [B, Q, 1, L, 1, 2 | 4]
        if reference_points.shape[-1] == 2:
            locations = refs + offsets / levels.wh[:, None, :]
        else:
            locations = refs[..., :2] + offsets / self.num_points * refs[..., 2:] * 0.5
        out = multi_scale_deformable_attention(maps, locations, weights.view(shape))
        return query + self.output_proj(out)


class MLP(nn.Module):
    """MMDetection's ``MLP``: ``num_layers`` linear layers (``layers.{i}``), ReLU between."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def _norms(norm_cfg: Mapping | None, dims: int, count: int) -> nn.ModuleList:
    cfg = dict(norm_cfg or dict(type='LN'))
    return nn.ModuleList(build_norm_layer(cfg, dims)[1] for _ in range(count))


class DeformableDetrTransformerEncoderLayer(nn.Module):
    """Post-norm: ``x = LN(MSDA(x + pos, x) + x)``, ``x = LN(FFN(x) + x)``."""

    def __init__(
        self,
        self_attn_cfg: Mapping | None = None,
        ffn_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(**dict(self_attn_cfg or {}))
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**dict(ffn_cfg or dict(embed_dims=self.embed_dims)))
        self.norms = _norms(norm_cfg, self.embed_dims, 2)

    def forward(self, query, query_pos, reference_points, levels, key_padding_mask) -> Tensor:
        query = self.self_attn(query, query, query_pos, reference_points, levels, key_padding_mask)
        query = self.norms[0](query)
        return self.norms[1](self.ffn(query))


class DeformableDetrTransformerEncoder(nn.Module):
    """``num_layers`` :class:`DeformableDetrTransformerEncoderLayer` (children ``layers.{i}``)."""

    def __init__(
        self,
        num_layers: int,
        layer_cfg: Mapping | None = None,
        num_cp: int = -1,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        if num_cp > 0:
            raise ConfigError('DeformableDetrTransformerEncoder: num_cp is not supported')
        self.layers = nn.ModuleList(
            DeformableDetrTransformerEncoderLayer(**dict(layer_cfg or {}))
            for _ in range(num_layers)
        )
        self.embed_dims = self.layers[0].embed_dims

    @staticmethod
    def reference_points(levels: Levels, valid_ratios: Tensor) -> Tensor:
        """Every cell centre of every level, normalised by its image's valid extent on that
        level and scaled to each level's valid extent: ``[B, N, L, 2]`` from ``valid_ratios
        [B, L, 2]`` ``(w, h)``."""
        points = []
        for level, (h, w) in enumerate(levels.sizes):
            ys = torch.arange(h, dtype=torch.float32, device=valid_ratios.device) + 0.5
            xs = torch.arange(w, dtype=torch.float32, device=valid_ratios.device) + 0.5
            ref_y = ys[None, :, None] / (
                valid_ratios[:, level, 1, None, None] * levels.wh[level, 1]
            )
            ref_x = xs[None, None, :] / (
                valid_ratios[:, level, 0, None, None] * levels.wh[level, 0]
            )
            points.append(torch.stack(torch.broadcast_tensors(ref_x, ref_y), dim=-1).flatten(1, 2))
        return torch.cat(points, dim=1)[:, :, None] * valid_ratios[:, None]

    def forward(self, query, query_pos, levels, valid_ratios, key_padding_mask) -> Tensor:
        """Tokens ``[B, N, C]`` with their positions -> the memory ``[B, N, C]``."""
        reference_points = self.reference_points(levels, valid_ratios)
        for layer in self.layers:
            query = layer(query, query_pos, reference_points, levels, key_padding_mask)
        return query


class DeformableDetrTransformerDecoderLayer(nn.Module):
    """Post-norm: self-attention, norm, deformable cross-attention, norm, FFN, norm."""

    def __init__(
        self,
        self_attn_cfg: Mapping | None = None,
        cross_attn_cfg: Mapping | None = None,
        ffn_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(
            **dict(self_attn_cfg or dict(embed_dims=256, num_heads=8))
        )
        self.cross_attn = MultiScaleDeformableAttention(**dict(cross_attn_cfg or {}))
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**dict(ffn_cfg or dict(embed_dims=self.embed_dims)))
        self.norms = _norms(norm_cfg, self.embed_dims, 3)

    def forward(self, query, query_pos, memory, reference_points, levels, memory_mask) -> Tensor:
        query = self.norms[0](self.self_attn(query, query, query, query_pos, query_pos))
        query = self.cross_attn(query, memory, query_pos, reference_points, levels, memory_mask)
        query = self.norms[1](query)
        return self.norms[2](self.ffn(query))


class DinoTransformerDecoder(nn.Module):
    """DINO's decoder: each layer's query positions come from its reference boxes
    (``ref_point_head`` of their sine encoding), and each layer refines the boxes with its
    regression branch (``reg_branches[lid]``, the head's, passed in).

    Children ``layers.{i}``, ``ref_point_head`` (MLP 2C -> C -> C), ``norm`` (the shared final
    LayerNorm).

    Args:
        num_layers: decoder layers.
        layer_cfg: arguments of every :class:`DeformableDetrTransformerDecoderLayer`.
        post_norm_cfg: must be None (DINO's final norm is ``norm``).
        return_intermediate: training only; accepted.
    """

    def __init__(
        self,
        num_layers: int,
        layer_cfg: Mapping | None = None,
        post_norm_cfg: Mapping | None = None,
        return_intermediate: bool = True,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        if post_norm_cfg is not None:
            raise ConfigError('DinoTransformerDecoder: post_norm_cfg must be None')
        self.layers = nn.ModuleList(
            DeformableDetrTransformerDecoderLayer(**dict(layer_cfg or {}))
            for _ in range(num_layers)
        )
        self.embed_dims = self.layers[0].embed_dims
        self.ref_point_head = MLP(2 * self.embed_dims, self.embed_dims, self.embed_dims, 2)
        self.norm = nn.LayerNorm(self.embed_dims)

    def forward(
        self,
        query: Tensor,
        memory: Tensor,
        reference_boxes: Tensor,
        levels: Levels,
        valid_ratios: Tensor,
        memory_mask: Tensor | None,
        reg_branches: nn.ModuleList,
        batch_invariant: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Run every layer.

        Args:
            query: content queries ``[B, Q, C]``.
            memory: encoder output ``[B, N, C]``; ``memory_mask [B, N]`` True on padding.
            reference_boxes: ``[B, Q, 4]`` ``(cx, cy, w, h)`` in ``(0, 1)`` of the real image.
            valid_ratios: ``[B, L, 2]`` ``(w, h)``: each image's share of each level.
            reg_branches: the head's box branches, one per layer.
            batch_invariant: encode the query positions from the boxes relative to the image
                (MMDetection encodes them relative to the padded level 0, which changes with
                the padding; the same thing for an image alone).

        Returns:
            The last layer's normed output ``[B, Q, C]`` and the reference boxes that entered
            it ``[B, Q, 4]`` (what the head's last branches read).
        """
        ratios = torch.cat([valid_ratios, valid_ratios], -1)[:, None]  # [B, 1, L, 4]
        entering = reference_boxes
        for lid, layer in enumerate(self.layers):
            entering = reference_boxes
            boxes = reference_boxes[:, :, None] * ratios  # [B, Q, L, 4]
            encoded = reference_boxes if batch_invariant else boxes[:, :, 0]
            query_pos = self.ref_point_head(coordinate_to_encoding(encoded, self.embed_dims // 2))
            query = layer(query, query_pos, memory, boxes, levels, memory_mask)
            refined = reg_branches[lid](query) + inverse_sigmoid(reference_boxes, eps=1e-3)
            reference_boxes = refined.sigmoid()
        return self.norm(query), entering
