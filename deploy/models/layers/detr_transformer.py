"""DETR's transformer: MMCV's ``MultiheadAttention`` and ``FFN`` bricks, the post-norm encoder and
decoder layers of MMDetection 3.x, and ``SinePositionalEncoding``.

Every tensor is batch-first: tokens ``[B, N, C]``. Module names follow MMDetection 3.x
(``layers.{i}.self_attn.attn.in_proj_weight``, ``layers.{i}.ffn.layers.0.0.weight``,
``layers.{i}.norms.{j}``, ``post_norm``), so 3.x checkpoints load unchanged; 2.x checkpoints are
renamed on load (:mod:`deploy.models.detectors.detr`).

Dropout is accepted in every config for compatibility and does nothing: the zoo only infers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from .norm import INPLACE_ACTIVATIONS, build_activation_layer, build_norm_layer

__all__ = [
    'FFN',
    'DetrTransformerDecoder',
    'DetrTransformerDecoderLayer',
    'DetrTransformerEncoder',
    'DetrTransformerEncoderLayer',
    'MultiheadAttention',
    'SinePositionalEncoding',
]


class MultiheadAttention(nn.Module):
    """MMCV's ``MultiheadAttention``: ``identity + attn(query + query_pos, key + key_pos, value)``.

    The positional encodings are added to queries and keys, never to values, and the residual
    is the query *before* its positional encoding. The child ``attn`` is a
    ``torch.nn.MultiheadAttention`` (keys ``attn.in_proj_weight``, ``attn.out_proj.weight``).

    Args:
        embed_dims: token channels ``C``.
        num_heads: attention heads (``C`` must be a multiple).
        attn_drop, proj_drop, dropout, dropout_layer: training only, accepted and unused.
        batch_first: must be True (MMDetection 3.x asserts it for every DETR).
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        dropout_layer: dict | None = None,
        batch_first: bool = True,
        dropout: float | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        if not batch_first:
            raise ConfigError('MultiheadAttention: DETR layers are batch-first (batch_first=True)')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, batch_first=True)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        query_pos: Tensor | None = None,
        key_pos: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """``query [B, Nq, C]``, ``key``/``value [B, Nk, C]``, positions shaped like them,
        ``key_padding_mask [B, Nk]`` bool (True: padding, never attended) -> ``[B, Nq, C]``."""
        q = query if query_pos is None else query + query_pos
        k = key if key_pos is None else key + key_pos
        out = self.attn(q, k, value, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return query + out


class FFN(nn.Module):
    """MMCV's ``FFN``: ``num_fcs`` linear layers with an activation between them, plus the input
    (``add_residual``).

    Children ``layers.0.0`` (first Linear, inside ``Sequential(Linear, act, Dropout)``), ...,
    ``layers.{num_fcs - 1}`` (last Linear), as in MMCV's checkpoints.

    Args:
        embed_dims: input and output channels.
        feedforward_channels: hidden channels.
        num_fcs: linear layers (>= 2).
        act_cfg: activation between them.
        ffn_drop, dropout, dropout_layer, layer_scale_init_value: training only / unsupported.
        add_residual: add the input to the output.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        feedforward_channels: int = 1024,
        num_fcs: int = 2,
        act_cfg: Mapping | None = None,
        ffn_drop: float = 0.0,
        dropout_layer: dict | None = None,
        add_residual: bool = True,
        init_cfg: dict | None = None,
        layer_scale_init_value: float = 0.0,
        dropout: float | None = None,
    ):
        super().__init__()
        if num_fcs < 2:
            raise ConfigError(f'FFN needs num_fcs >= 2, got {num_fcs}')
        if layer_scale_init_value:
            raise ConfigError('FFN with layer scale is not supported')
        act_cfg = dict(act_cfg or dict(type='ReLU', inplace=True))
        if act_cfg['type'] in INPLACE_ACTIVATIONS:
            act_cfg.setdefault('inplace', True)
        layers: list[nn.Module] = []
        in_channels = embed_dims
        for _ in range(num_fcs - 1):
            layers.append(
                nn.Sequential(
                    nn.Linear(in_channels, feedforward_channels),
                    build_activation_layer(act_cfg),
                    nn.Dropout(ffn_drop),
                )
            )
            in_channels = feedforward_channels
        layers += [nn.Linear(feedforward_channels, embed_dims), nn.Dropout(ffn_drop)]
        self.layers = nn.Sequential(*layers)
        self.add_residual = add_residual

    def forward(self, x: Tensor) -> Tensor:
        """``[..., C] -> [..., C]``."""
        out = self.layers(x)
        return x + out if self.add_residual else out


class DetrTransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: self-attention, norm, FFN, norm.

    Args:
        self_attn_cfg: :class:`MultiheadAttention` arguments.
        ffn_cfg: :class:`FFN` arguments.
        norm_cfg: the norms (LayerNorm).
    """

    def __init__(
        self,
        self_attn_cfg: Mapping | None = None,
        ffn_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(
            **dict(self_attn_cfg or dict(embed_dims=256, num_heads=8))
        )
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**dict(ffn_cfg or dict(embed_dims=self.embed_dims)))
        norm_cfg = dict(norm_cfg or dict(type='LN'))
        self.norms = nn.ModuleList(build_norm_layer(norm_cfg, self.embed_dims)[1] for _ in range(2))

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Tensor) -> Tensor:
        """``query``/``query_pos [B, N, C]``, ``key_padding_mask [B, N]`` -> ``[B, N, C]``."""
        query = self.self_attn(
            query, query, query, query_pos, query_pos, key_padding_mask=key_padding_mask
        )
        query = self.norms[0](query)
        return self.norms[1](self.ffn(query))


class DetrTransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention, norm, cross-attention, norm, FFN, norm.

    Args:
        self_attn_cfg, cross_attn_cfg: :class:`MultiheadAttention` arguments.
        ffn_cfg: :class:`FFN` arguments.
        norm_cfg: the norms (LayerNorm).
    """

    def __init__(
        self,
        self_attn_cfg: Mapping | None = None,
        cross_attn_cfg: Mapping | None = None,
        ffn_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        default_attn = dict(embed_dims=256, num_heads=8)
        self.self_attn = MultiheadAttention(**dict(self_attn_cfg or default_attn))
        self.cross_attn = MultiheadAttention(**dict(cross_attn_cfg or default_attn))
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**dict(ffn_cfg or dict(embed_dims=self.embed_dims)))
        norm_cfg = dict(norm_cfg or dict(type='LN'))
        self.norms = nn.ModuleList(build_norm_layer(norm_cfg, self.embed_dims)[1] for _ in range(3))

    def forward(
        self,
        query: Tensor,
        memory: Tensor,
        query_pos: Tensor,
        memory_pos: Tensor,
        memory_padding_mask: Tensor,
    ) -> Tensor:
        """``query``/``query_pos [B, Q, C]``, ``memory``/``memory_pos [B, N, C]``,
        ``memory_padding_mask [B, N]`` -> ``[B, Q, C]``. Queries attend to each other freely."""
        query = self.norms[0](self.self_attn(query, query, query, query_pos, query_pos))
        query = self.cross_attn(
            query, memory, memory, query_pos, memory_pos, key_padding_mask=memory_padding_mask
        )
        query = self.norms[1](query)
        return self.norms[2](self.ffn(query))


class DetrTransformerEncoder(nn.Module):
    """``num_layers`` :class:`DetrTransformerEncoderLayer` (children ``layers.{i}``).

    Args:
        num_layers: encoder layers.
        layer_cfg: arguments of every layer.
        num_cp: gradient checkpointing (training only): must be off.
    """

    def __init__(
        self,
        num_layers: int,
        layer_cfg: Mapping | None = None,
        num_cp: int = -1,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        if num_cp > 0:
            raise ConfigError('DetrTransformerEncoder: num_cp (checkpointing) is not supported')
        self.layers = nn.ModuleList(
            DetrTransformerEncoderLayer(**dict(layer_cfg or {})) for _ in range(num_layers)
        )
        self.embed_dims = self.layers[0].embed_dims

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Tensor) -> Tensor:
        """Image tokens ``[B, N, C]``, their positions and ``key_padding_mask [B, N]`` ->
        the memory ``[B, N, C]``."""
        for layer in self.layers:
            query = layer(query, query_pos, key_padding_mask)
        return query


class DetrTransformerDecoder(nn.Module):
    """``num_layers`` :class:`DetrTransformerDecoderLayer` and the shared ``post_norm``.

    MMDetection returns the post-normed output of every layer (``return_intermediate``) for the
    auxiliary training losses, and predicts from the last one only; :meth:`forward` returns that
    last one.

    Args:
        num_layers: decoder layers.
        layer_cfg: arguments of every layer.
        post_norm_cfg: the final norm (LayerNorm).
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
        self.layers = nn.ModuleList(
            DetrTransformerDecoderLayer(**dict(layer_cfg or {})) for _ in range(num_layers)
        )
        self.embed_dims = self.layers[0].embed_dims
        self.post_norm = build_norm_layer(dict(post_norm_cfg or dict(type='LN')), self.embed_dims)[
            1
        ]

    def forward(
        self,
        query: Tensor,
        memory: Tensor,
        query_pos: Tensor,
        memory_pos: Tensor,
        memory_padding_mask: Tensor,
    ) -> Tensor:
        """Queries ``[B, Q, C]`` (zeros) with their learned positions, the encoder memory
        ``[B, N, C]`` with its positions and padding mask -> the last layer's ``[B, Q, C]``,
        post-normed."""
        for layer in self.layers:
            query = layer(query, memory, query_pos, memory_pos, memory_padding_mask)
        return self.post_norm(query)


@MODELS.register_module()
class SinePositionalEncoding(nn.Module):
    """MMDetection's sine positional encoding of the real (unpadded) pixels of a feature map.

    Along each axis the position is the running count of real cells (``cumsum`` of the inverted
    mask), optionally normalised by the count at the last cell of that row or column
    (``(pos + offset) / (last + eps) * scale``), then encoded with sines and cosines of
    ``num_feats`` frequencies ``temperature ** (2 * (i // 2) / num_feats)``. So the encoding of a
    real cell depends only on the real part of the map, not on the padding around it.

    Args:
        num_feats: channels per axis; the output has ``2 * num_feats`` (y first, then x).
        temperature: frequency base.
        normalize: normalise positions to ``(0, scale]``.
        scale: the normalised range (``2 * pi``).
        eps: added to the denominator.
        offset: added to the positions before normalising.
    """

    def __init__(
        self,
        num_feats: int,
        temperature: int = 10000,
        normalize: bool = False,
        scale: float = 2 * math.pi,
        eps: float = 1e-6,
        offset: float = 0.0,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        if normalize and not isinstance(scale, (int, float)):
            raise ConfigError(f'SinePositionalEncoding: scale must be a number, got {scale!r}')
        self.num_feats = num_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def forward(self, mask: Tensor) -> Tensor:
        """``mask [B, H, W]`` bool (True: padding) -> positions ``[B, 2 * num_feats, H, W]``."""
        not_mask = 1 - mask.to(torch.int32)
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        # sin of the even frequencies and cos of the odd ones, interleaved: [s0, c1, s2, c3, ...]
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
