"""DETR across MMDetection versions: 2.x configs and 2.x (and pre-2.12) checkpoint keys.

The zoo's :class:`~deploy.models.detectors.detr.DETR` has MMDetection 3.x's layout: a
``ChannelMapper`` neck, and ``encoder`` / ``decoder`` / ``query_embedding`` on the detector. 2.x
kept all of them inside ``bbox_head`` (``input_proj``, ``transformer``, ``query_embedding``) and
named the layers' children differently. Two explicit translations bridge the versions:

* :func:`detr_config_from_2x`: a 2.x ``bbox_head`` dict (``Transformer`` with
  ``DetrTransformerEncoder`` / ``DetrTransformerDecoder`` of ``BaseTransformerLayer`` /
  ``DetrTransformerDecoderLayer``, ``SinePositionalEncoding``, ``in_channels``, ``num_query``)
  -> the 3.x model arguments that build the same modules;
* :func:`detr_keys_2x_to_3x` / :func:`detr_keys_3x_to_2x`: checkpoint keys, one rule table read
  in both directions (``shared/mmdet_models.md`` section 2.13); and :func:`upgrade_v1_keys`,
  MMDetection's own rename of checkpoints written before 2.12 (``DETRHead._version < 2``).

The detector applies them when it loads a state dict (``DETR._load_from_state_dict``), so
``load_checkpoint`` needs no DETR-specific code.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

from ...errors import ConfigError

__all__ = [
    'detr_config_from_2x',
    'detr_keys_any_to_3x',
    'detr_keys_2x_to_3x',
    'detr_keys_3x_to_2x',
    'is_2x_layout',
    'upgrade_v1_keys',
]

# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------

#: the only layer orders DETR uses (post-norm); anything else would build another network
_ENCODER_ORDER = ('self_attn', 'norm', 'ffn', 'norm')
_DECODER_ORDER = ('self_attn', 'norm', 'cross_attn', 'norm', 'ffn', 'norm')
_LAYER_TYPES = ('BaseTransformerLayer', 'DetrTransformerDecoderLayer')


def _type_of(cfg: Mapping, default: str) -> str:
    return str(cfg.get('type', default)).rsplit('.', 1)[-1]


def _check_type(cfg: Mapping, allowed: tuple[str, ...], where: str) -> None:
    found = _type_of(cfg, allowed[0])
    if found not in allowed:
        raise ConfigError(
            f'`{where}.type` is {found!r}; DETR supports {" or ".join(map(repr, allowed))}'
        )


def _attention_2x(cfg: Mapping, where: str) -> dict:
    """A 2.x ``MultiheadAttention`` config -> 3.x ``self_attn_cfg``/``cross_attn_cfg``."""
    cfg = dict(cfg)
    _check_type(cfg, ('MultiheadAttention',), where)
    cfg.pop('type', None)
    # 2.x attention is sequence-first, 3.x batch-first: a layout choice, the weights are the same.
    cfg['batch_first'] = True
    return cfg


def _layer_2x(layer: Mapping, order: tuple[str, ...], where: str) -> dict:
    """A 2.x ``BaseTransformerLayer`` config -> the 3.x ``layer_cfg``."""
    layer = dict(layer)
    _check_type(layer, _LAYER_TYPES, where)
    found = tuple(layer.get('operation_order') or ())
    if found != order:
        raise ConfigError(
            f'`{where}.operation_order` is {found}; DETR layers are post-norm {order}'
        )
    num_attn = order.count('self_attn') + order.count('cross_attn')
    attn_cfgs = layer.get('attn_cfgs')
    if isinstance(attn_cfgs, Mapping):  # one dict shared by every attention of the layer
        attn_cfgs = [attn_cfgs] * num_attn
    if not isinstance(attn_cfgs, (list, tuple)) or len(attn_cfgs) != num_attn:
        raise ConfigError(f'`{where}.attn_cfgs` needs {num_attn} attention config(s)')
    attns = [_attention_2x(a, f'{where}.attn_cfgs[{i}]') for i, a in enumerate(attn_cfgs)]
    embed_dims = attns[0].get('embed_dims', 256)
    # MMCV moves the deprecated layer-level FFN arguments into ``ffn_cfgs``.
    ffn = dict(layer.get('ffn_cfgs') or dict(num_fcs=2))
    ffn.pop('type', None)
    for old, new in (
        ('feedforward_channels', 'feedforward_channels'),
        ('ffn_dropout', 'ffn_drop'),
        ('ffn_num_fcs', 'num_fcs'),
    ):
        if old in layer:
            ffn[new] = layer[old]
    ffn.setdefault('embed_dims', embed_dims)
    ffn.setdefault('feedforward_channels', 1024)
    ffn.setdefault('act_cfg', dict(type='ReLU', inplace=True))
    cfg = dict(self_attn_cfg=attns[0], ffn_cfg=ffn, norm_cfg=layer.get('norm_cfg', dict(type='LN')))
    if len(attns) == 2:
        cfg['cross_attn_cfg'] = attns[1]
    return cfg


def _stack_2x(stack: Mapping, type_: str, order: tuple[str, ...], where: str) -> dict:
    """A 2.x ``DetrTransformerEncoder``/``Decoder`` config -> the 3.x ``encoder``/``decoder``."""
    stack = dict(stack)
    _check_type(stack, (type_,), where)
    layers = stack.get('transformerlayers')
    if isinstance(layers, (list, tuple)):  # one config per layer: DETR's are all the same
        if not layers or any(dict(lay) != dict(layers[0]) for lay in layers):
            raise ConfigError(f'`{where}.transformerlayers` must describe identical layers')
        layers = layers[0]
    if not isinstance(layers, Mapping):
        raise ConfigError(f'`{where}.transformerlayers` must be a dict')
    cfg = dict(
        num_layers=stack['num_layers'],
        layer_cfg=_layer_2x(layers, order, f'{where}.transformerlayers'),
    )
    if type_ == 'DetrTransformerDecoder':
        cfg['post_norm_cfg'] = stack.get('post_norm_cfg', dict(type='LN'))
        cfg['return_intermediate'] = stack.get('return_intermediate', True)
    return cfg


def detr_config_from_2x(bbox_head: Mapping) -> dict:
    """The 3.x ``DETR`` arguments that build what a 2.x ``DETRHead`` config describes.

    Args:
        bbox_head: the 2.x ``model.bbox_head`` (with ``transformer``, ``positional_encoding``,
            ``in_channels`` and optionally ``num_query``).

    Returns:
        ``dict(neck, encoder, decoder, positional_encoding, num_queries, bbox_head)``; the
        ``bbox_head`` keeps the head's own arguments plus ``embed_dims``.

    Raises:
        ConfigError: a type or layer order DETR does not use.
    """
    head = dict(bbox_head)
    transformer = dict(head.pop('transformer'))
    _check_type(transformer, ('Transformer',), 'model.bbox_head.transformer')
    where = 'model.bbox_head.transformer'
    encoder = _stack_2x(
        transformer['encoder'], 'DetrTransformerEncoder', _ENCODER_ORDER, f'{where}.encoder'
    )
    decoder = _stack_2x(
        transformer['decoder'], 'DetrTransformerDecoder', _DECODER_ORDER, f'{where}.decoder'
    )
    embed_dims = encoder['layer_cfg']['self_attn_cfg'].get('embed_dims', 256)
    positional_encoding = dict(
        head.pop('positional_encoding', None)
        or dict(type='SinePositionalEncoding', num_feats=128, normalize=True)
    )
    _check_type(
        positional_encoding, ('SinePositionalEncoding',), 'model.bbox_head.positional_encoding'
    )
    positional_encoding.pop('type', None)
    neck = dict(
        type='ChannelMapper',
        in_channels=[head.pop('in_channels')],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=None,
        num_outs=1,
    )
    num_queries = head.pop('num_query', 100)
    head['embed_dims'] = embed_dims
    return dict(
        neck=neck,
        encoder=encoder,
        decoder=decoder,
        positional_encoding=positional_encoding,
        num_queries=num_queries,
        bbox_head=head,
    )


# --------------------------------------------------------------------------------------------
# checkpoint keys
# --------------------------------------------------------------------------------------------

#: (2.x pattern, 3.x pattern) over whole keys, applied in order; read right to left for 3.x -> 2.x
_KEY_RULES: tuple[tuple[str, str], ...] = (
    ('bbox_head.input_proj.', 'neck.convs.0.conv.'),
    ('bbox_head.query_embedding.', 'query_embedding.'),
    ('bbox_head.transformer.encoder.layers.{i}.attentions.0.', 'encoder.layers.{i}.self_attn.'),
    ('bbox_head.transformer.encoder.layers.{i}.ffns.0.', 'encoder.layers.{i}.ffn.'),
    ('bbox_head.transformer.decoder.layers.{i}.attentions.0.', 'decoder.layers.{i}.self_attn.'),
    ('bbox_head.transformer.decoder.layers.{i}.attentions.1.', 'decoder.layers.{i}.cross_attn.'),
    ('bbox_head.transformer.decoder.layers.{i}.ffns.0.', 'decoder.layers.{i}.ffn.'),
    # what is left of the stacks (norms, post_norm) only loses the prefix
    ('bbox_head.transformer.encoder.', 'encoder.'),
    ('bbox_head.transformer.decoder.', 'decoder.'),
)


def _compile(source: str, target: str) -> tuple[re.Pattern, str]:
    pattern = '^' + re.escape(source).replace(re.escape('{i}'), r'(\d+)')
    return re.compile(pattern), target.replace('{i}', r'\1')


_TO_3X = [_compile(old, new) for old, new in _KEY_RULES]
_TO_2X = [_compile(new, old) for old, new in _KEY_RULES]


def _rename(key: str, rules) -> str:
    for pattern, replacement in rules:
        renamed, count = pattern.subn(replacement, key, count=1)
        if count:
            return renamed
    return key


def _map_state_dict(state_dict: Mapping, rules, prefix: str) -> OrderedDict:
    """Rename every key under ``prefix`` (and ``_metadata``'s module paths) with ``rules``."""

    def rename(key: str) -> str:
        if not key.startswith(prefix):
            return key
        return prefix + _rename(key[len(prefix) :], rules)

    result = OrderedDict((rename(k), v) for k, v in state_dict.items())
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        # module paths carry no trailing dot: rename "path." and strip it again
        result._metadata = OrderedDict(
            (rename(f'{path}.')[:-1] if path else path, value) for path, value in metadata.items()
        )
    return result


def detr_keys_2x_to_3x(state_dict: Mapping, prefix: str = '') -> OrderedDict:
    """A DETR state dict in MMDetection 2.x (2.12+) layout -> the 3.x layout (shapes unchanged).

    Keys outside DETR's changed modules (backbone, ``bbox_head.fc_cls``/``reg_ffn``/``fc_reg``)
    and keys already in 3.x layout pass unchanged; ``prefix`` is the detector's own prefix.
    """
    return _map_state_dict(state_dict, _TO_3X, prefix)


def detr_keys_3x_to_2x(state_dict: Mapping, prefix: str = '') -> OrderedDict:
    """The inverse of :func:`detr_keys_2x_to_3x`: a 3.x DETR state dict in 2.x layout."""
    return _map_state_dict(state_dict, _TO_2X, prefix)


#: MMDetection 2.12 renamed the transformer's children (``DETRHead._load_from_state_dict``)
_V1_RENAMES = (
    ('.self_attn.', '.attentions.0.'),
    ('.ffn.', '.ffns.0.'),
    ('.multihead_attn.', '.attentions.1.'),
    ('.decoder.norm.', '.decoder.post_norm.'),
)


def upgrade_v1_keys(state_dict: Mapping, prefix: str = '') -> OrderedDict:
    """MMDetection's upgrade of a ``DETRHead`` checkpoint older than 2.12 (head version < 2):
    renames under ``<prefix>bbox_head.``; a no-op on 2.12+ 2.x keys (none contains the old
    names)."""
    head = f'{prefix}bbox_head.'

    def rename(key: str) -> str:
        if key.startswith(head):
            for old, new in _V1_RENAMES:
                key = key.replace(old, new)
        return key

    result = OrderedDict((rename(k), v) for k, v in state_dict.items())
    if hasattr(state_dict, '_metadata'):
        result._metadata = state_dict._metadata
    return result


def is_2x_layout(keys, prefix: str = '') -> bool:
    """Whether a state dict's ``keys`` hold a 2.x-layout DETR (the transformer inside the head)."""
    markers = tuple(
        f'{prefix}bbox_head.{name}.' for name in ('transformer', 'input_proj', 'query_embedding')
    )
    return any(key.startswith(markers) for key in keys)


def detr_keys_any_to_3x(state_dict: Mapping, prefix: str = '') -> Mapping:
    """Any DETR state dict in the 3.x layout: 2.x keys mapped (after MMDetection's pre-2.12
    upgrade when ``_metadata`` gives the head no version, or one below 2); a 3.x state dict is
    returned as it is."""
    if not is_2x_layout(state_dict, prefix):
        return state_dict
    metadata = getattr(state_dict, '_metadata', None) or {}
    head_version = metadata.get(f'{prefix}bbox_head', {}).get('version')
    if head_version is None or head_version < 2:  # written before MMDetection 2.12
        state_dict = upgrade_v1_keys(state_dict, prefix)
    return detr_keys_2x_to_3x(state_dict, prefix)
