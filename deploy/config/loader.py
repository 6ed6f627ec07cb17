"""Load MMDetection 2.x / 3.x config files and read what the deploy pipeline needs from them.

Every reader here accepts both schemas (see ``shared/mmdet_models.md`` section 3) and reports a
missing or ambiguous key as a :class:`~deploy.errors.ConfigError` naming the key and the file, so
the tools can print one clean line instead of a traceback from deep inside ``mmengine``.
"""

from __future__ import annotations

import argparse
import ast
import os
import os.path as osp
from collections.abc import Mapping, Sequence
from typing import Any

from mmengine.config import Config, ConfigDict, DictAction

from ..errors import ConfigError
from ..spec import CenterPad, PreprocessConfig, registry_type_name
from .reading import (
    cfg_file,
    find_test_pipeline,
    join_root,
    lookup,
    missing_key_error,
    read_class_file,
    three_numbers,
    transform_type,
    unwrap_dataset,
    walk_transforms,
)

__all__ = [
    'add_cfg_options_argument',
    'get_class_names',
    'get_model_cfg',
    'get_preprocess_cfg',
    'get_test_dataset_cfg',
    'load_config',
    'missing_key_error',
]


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction``, with a malformed item reported as a command-line error."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values or ():
            key = item.split('=', 1)[0]
            if '=' not in item or not key:
                parser.error(f'{option_string} expects key=value, got {item!r}')
        super().__call__(parser, namespace, values, option_string)


def add_cfg_options_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add MMDetection's ``--cfg-options key=value ...`` argument to a command-line parser.

    Values are parsed with ``mmengine.config.DictAction``: ``a.b=1`` gives an int, ``a=[1,2]`` a
    list, ``a=(1,2)`` a tuple, ``a=x,y`` a list of strings. Pass the parsed dict to
    :func:`load_config` as ``cfg_options``.
    """
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        default=None,
        metavar='KEY=VALUE',
        help='override config settings, e.g. model.test_cfg.score_thr=0.3; nested keys use dots, '
        'list values are written [a,b] and tuples (a,b)',
    )
    return parser


def load_config(path: str | os.PathLike, cfg_options: dict | list[str] | None = None) -> Config:
    """Read a config file with its ``_base_`` chain and apply ``--cfg-options`` overrides.

    Args:
        path: a ``.py`` (or ``.json``/``.yaml``) MMDetection config.
        cfg_options: overrides as a dict ``{'model.test_cfg.score_thr': 0.3}`` or as the raw
            ``['model.test_cfg.score_thr=0.3', ...]`` strings of ``--cfg-options``.

    Raises:
        ConfigError: the file or one of its ``_base_`` files is missing, has a syntax error, or
            an override cannot be applied.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    _check_config_chain(path, referenced_by=None, seen=set())
    try:
        # import_custom_modules=False: reading a config must never import arbitrary code.
        cfg = Config.fromfile(path, import_custom_modules=False)
    except ConfigError:
        raise
    except SyntaxError as e:
        raise ConfigError(f'syntax error in config {path}: {e}') from e
    except Exception as e:  # mmengine raises many types; the user needs the file and the reason
        raise ConfigError(f'cannot load config {path}: {type(e).__name__}: {e}') from e

    if cfg_options:
        options = _parse_cfg_options(cfg_options)
        _check_schema_of_options(cfg, options, path)
        try:
            cfg.merge_from_dict(options)
        except Exception as e:
            raise ConfigError(f'cannot apply --cfg-options {options} to {path}: {e}') from e
    return cfg


def _parse_cfg_options(cfg_options: dict | list[str] | tuple[str, ...]) -> dict:
    """Turn ``--cfg-options`` strings into a dict with ``DictAction``'s value parsing."""
    if isinstance(cfg_options, Mapping):
        return dict(cfg_options)
    if isinstance(cfg_options, str):
        cfg_options = [cfg_options]
    options = {}
    for item in cfg_options:
        if not isinstance(item, str) or '=' not in item:
            raise ConfigError(f'--cfg-options expects key=value, got {item!r}')
        key, value = item.split('=', maxsplit=1)
        if not key:
            raise ConfigError(f'--cfg-options expects key=value, got {item!r}')
        options[key] = DictAction._parse_iterable(value)
    return options


def _check_schema_of_options(cfg: Config, options: dict, path: str) -> None:
    """Refuse a 2.x data key on a 3.x config (and the reverse): it would be added next to the
    real one and silently change nothing."""
    is_3x = 'test_dataloader' in cfg and 'data' not in cfg
    is_2x = 'data' in cfg and 'test_dataloader' not in cfg
    for key in options:
        if is_3x and key.startswith('data.'):
            field = key.split('.')[-1]
            new = {'img_prefix': 'data_prefix.img'}.get(field, field)
            raise ConfigError(
                f'--cfg-options {key}: {path} is an MMDetection 3.x config, whose test data is '
                f'`test_dataloader.dataset`; use test_dataloader.dataset.{new}'
            )
        if is_2x and key.startswith(('test_dataloader.', 'val_dataloader.')):
            field = key.split('.')[-1]
            new = {'img': 'img_prefix'}.get(field, field)
            raise ConfigError(
                f'--cfg-options {key}: {path} is an MMDetection 2.x config, whose test data is '
                f'`data.test`; use data.test.{new}'
            )


def _check_config_chain(path: str, referenced_by: str | None, seen: set[str]) -> None:
    """Check a config and its ``_base_`` files exist and parse, before mmengine runs them.

    mmengine reports these problems with wrapped exceptions that lose either the file or the
    line; doing the check here gives errors like ``syntax error in configs/x.py, line 3``.
    """
    real = osp.realpath(path)
    if real in seen:
        return
    seen.add(real)
    if not osp.isfile(path):
        where = f' (listed in `_base_` of {referenced_by})' if referenced_by else ''
        raise ConfigError(f'config file not found: {path}{where}')
    if not path.endswith('.py'):
        return
    try:
        with open(path, encoding='utf-8') as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f'cannot read config {path}: {e}') from e
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        line = f', line {e.lineno}' if e.lineno else ''
        raise ConfigError(f'syntax error in config {path}{line}: {e.msg}') from None

    for base in _literal_bases(tree):
        if '::' in base or '{{' in base:
            continue  # package-scoped (``mmdet::``) or templated bases: left to mmengine
        base_path = base if osp.isabs(base) else osp.join(osp.dirname(path), base)
        _check_config_chain(osp.normpath(base_path), referenced_by=path, seen=seen)


def _literal_bases(tree: ast.Module) -> list[str]:
    """The ``_base_`` file names of a parsed config, when they are written as literals."""
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        if not any(isinstance(t, ast.Name) and t.id == '_base_' for t in node.targets):
            continue
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)):
            return [v for v in value if isinstance(v, str)]
    return []


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------


def get_model_cfg(cfg: Config) -> ConfigDict:
    """The ``model`` dict of a config."""
    model = cfg.get('model')
    if not isinstance(model, Mapping):
        raise missing_key_error('model', cfg)
    return model


# --------------------------------------------------------------------------------------------
# pre-processing
# --------------------------------------------------------------------------------------------


def _as_scale(value: Any, where: str, file: str) -> tuple[int, int]:
    """``(1333, 800)`` from a tuple or a list holding one tuple."""
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = value[0]
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
    ):
        return int(value[0]), int(value[1])
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        raise ConfigError(
            f'{where} in {file} lists {len(value)} scales; multi-scale testing is not supported, '
            'give one (w, h) scale'
        )
    raise ConfigError(f'{where} in {file} is not a (w, h) scale: {value!r}')


def _pad_value(value: Any) -> float:
    if isinstance(value, Mapping):  # 2.x Pad(pad_val=dict(img=0, masks=0, seg=255))
        value = value.get('img', 0)
    if isinstance(value, (list, tuple)):
        values = set(value)
        if len(values) != 1:
            raise ConfigError(f'per-channel pad values are not supported: {value!r}')
        value = values.pop()
    return float(value or 0)


def get_preprocess_cfg(cfg: Config) -> PreprocessConfig:
    """What the test pipeline does to an image, from a 2.x or a 3.x config.

    * 3.x: ``model.data_preprocessor`` (mean, std, bgr_to_rgb, pad_size_divisor, pad_value) and
      ``Resize(scale=..., keep_ratio=...)`` in ``test_dataloader.dataset.pipeline``.
    * 2.x: ``Normalize``, ``Resize`` and ``Pad`` in ``data.test.pipeline`` or ``test_pipeline``,
      flat or inside ``MultiScaleFlipAug(img_scale=..., transforms=[...])``.

    Exactly one normalisation (data preprocessor or ``Normalize``) must be present. Classifier
    configs (``ImageClassifier``) are read by :mod:`deploy.config.classification`.
    """
    from .classification import get_classifier_preprocess_cfg, is_classifier_cfg

    if is_classifier_cfg(cfg):
        return get_classifier_preprocess_cfg(cfg)
    file = cfg_file(cfg)
    found = find_test_pipeline(cfg)
    where, pipeline = found if found else ('test pipeline', [])

    normalisations: list[tuple[str, tuple, tuple, bool]] = []
    size_divisor: int | None = None
    pad_value = 0.0

    preprocessor = lookup(cfg, 'model.data_preprocessor')
    if isinstance(preprocessor, Mapping):
        if preprocessor.get('mean') is not None or preprocessor.get('std') is not None:
            normalisations.append(
                (
                    'model.data_preprocessor',
                    three_numbers(preprocessor.get('mean'), 'model.data_preprocessor.mean', file),
                    three_numbers(preprocessor.get('std'), 'model.data_preprocessor.std', file),
                    bool(preprocessor.get('bgr_to_rgb', preprocessor.get('rgb_to_bgr', False))),
                )
            )
        divisor = preprocessor.get('pad_size_divisor')
        if divisor and int(divisor) > 1:
            size_divisor = int(divisor)
        pad_value = _pad_value(preprocessor.get('pad_value', 0))

    resizes: list[tuple[tuple[int, int], bool, float | None]] = []
    to_float32 = False
    center_pad = None
    pad_to_square = False
    pad_to_size, pad_to_size_value = None, 0.0
    for transform, wrapper in walk_transforms(pipeline):
        _refuse_test_time_augmentation(pipeline, wrapper, where, file)
        name = transform_type(transform)
        if name == 'LoadImageFromFile':
            to_float32 = bool(transform.get('to_float32', False))
        elif name == 'RandomCenterCropPad':
            center_pad = _read_center_pad(transform, where, file)
        elif name == 'Normalize':
            normalisations.append(
                (
                    f'Normalize in {where}',
                    three_numbers(transform.get('mean'), f'Normalize.mean in {where}', file),
                    three_numbers(transform.get('std'), f'Normalize.std in {where}', file),
                    bool(transform.get('to_rgb', True)),  # mmcv's Normalize default
                )
            )
        elif name == 'Resize':
            resizes.append(_read_resize(transform, wrapper, where, file))
        elif name == 'Pad':
            if transform.get('size_divisor'):
                size_divisor = int(transform['size_divisor'])
            elif transform.get('size') is not None:
                if any(n[0].startswith('Normalize') for n in normalisations):
                    raise ConfigError(
                        f'Pad(size=...) after Normalize in {where} of {file} is not supported; '
                        'use size_divisor'
                    )
                # 3.x Pad(size=(w, h)): raw pixels, before the data preprocessor normalises
                pad_w, pad_h = _as_scale(transform['size'], f'Pad.size in {where}', file)
                pad_to_size = (pad_h, pad_w)
                pad_to_size_value = _pad_value(transform.get('pad_val', 0))
                continue
            pad_value = _pad_value(transform.get('pad_val', 0))
            pad_to_square = pad_to_square or bool(transform.get('pad_to_square', False))

    if not normalisations and _normalises_nothing(cfg, preprocessor):
        to_rgb = isinstance(preprocessor, Mapping) and bool(preprocessor.get('bgr_to_rgb'))
        normalisations.append(('none', (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), to_rgb))
    if not normalisations:
        raise ConfigError(
            f'no normalisation found in {file}: neither `model.data_preprocessor.mean` '
            f'nor a `Normalize` step in `{where}`'
        )
    if len(normalisations) > 1:
        places = ', '.join(n[0] for n in normalisations)
        raise ConfigError(f'ambiguous normalisation in {file}: found {places}; keep exactly one')
    if not resizes and center_pad is not None:
        # MMDetection 3.x's CornerNet leaves Resize out on purpose: the image keeps its size
        # and RandomCenterCropPad pads it, which its 2.x file writes as a resize by 1.0.
        resizes.append((PreprocessConfig.scale, True, 1.0))
    if not resizes:
        raise ConfigError(
            f'no `Resize` in `{where}` of {file}: the test-time input scale is needed'
        )
    if len(resizes) > 1 and len(set(resizes)) > 1:
        raise ConfigError(f'ambiguous Resize in {where} of {file}: {resizes}')

    _, mean, std, to_rgb = normalisations[0]
    scale, keep_ratio, resize_factor = resizes[0]
    return PreprocessConfig(
        mean=mean,
        std=std,
        to_rgb=to_rgb,
        scale=scale,
        keep_ratio=keep_ratio,
        size_divisor=size_divisor,
        pad_value=pad_value,
        resize_factor=resize_factor,
        to_float32=to_float32,
        center_pad=center_pad,
        pad_to_square=pad_to_square,
        pad_to_size=pad_to_size,
        pad_to_size_value=pad_to_size_value,
    )


def _normalises_nothing(cfg: Config, preprocessor: Any) -> bool:
    """The model takes raw pixels: a 3.x data preprocessor without mean and std, or a 2.x
    YOLOX config (whose test pipeline has no ``Normalize``, as in MMDetection)."""
    if isinstance(preprocessor, Mapping):
        return True
    return registry_type_name(lookup(cfg, 'model.type') or '') == 'YOLOX'


def _read_center_pad(transform: Mapping, where: str, file: str) -> CenterPad:
    """:class:`CenterPad` of a ``RandomCenterCropPad`` (test mode only)."""
    if not transform.get('test_mode'):
        raise ConfigError(
            f'RandomCenterCropPad in `{where}` of {file} is in training mode (random crops); the '
            'test pipeline needs test_mode=True'
        )
    pad_mode = transform.get('test_pad_mode')
    if (
        not isinstance(pad_mode, (list, tuple))
        or len(pad_mode) != 2
        or pad_mode[0] not in CenterPad.CHOICES['mode']
        or not isinstance(pad_mode[1], int)
        or pad_mode[1] < 1
    ):
        raise ConfigError(
            f"RandomCenterCropPad.test_pad_mode in `{where}` of {file} must be ['logical_or', n] "
            f"or ['size_divisor', n], got {pad_mode!r}"
        )
    mode, value = pad_mode
    if mode == 'logical_or' and value & (value + 1):
        raise ConfigError(
            f"RandomCenterCropPad.test_pad_mode ['logical_or', {value}] in `{where}` of {file}: "
            'only values one below a power of two (such as 127) are supported'
        )
    mean = three_numbers(transform.get('mean'), f'RandomCenterCropPad.mean in {where}', file)
    # MMDetection fills the canvas with the mean in the image's channel order (BGR).
    fill = mean[::-1] if transform.get('to_rgb', True) else mean
    return CenterPad(
        mode=mode, value=value, add_pix=int(transform.get('test_pad_add_pix', 0)), fill=fill
    )


def _refuse_test_time_augmentation(
    pipeline: Sequence, wrapper: Mapping | None, where: str, file: str
) -> None:
    """Flip test-time augmentation cannot be exported as one graph pass: refuse it rather than
    evaluate without it and report a number the config does not describe."""
    if wrapper is None or not wrapper.get('flip'):
        return
    index = next((i for i, t in enumerate(pipeline) if t is wrapper), None)
    key = f'{where}.{index}.flip' if index is not None else f'{where}...flip'
    raise ConfigError(
        f'{transform_type(wrapper)}(flip=True) in `{where}` of {file}: flip test-time augmentation '
        f'is not supported; set flip=False (--cfg-options {key}=False, or in the config)'
    )


def _read_resize(
    transform: Mapping, wrapper: Mapping | None, where: str, file: str
) -> tuple[tuple[int, int], bool, float | None]:
    """``(scale, keep_ratio, resize_factor)`` of one Resize, taking the scale (or the scale
    factor) from its MultiScaleFlipAug; ``resize_factor`` is None unless the resize is by a
    factor (then ``scale`` is the default, unused)."""
    for key in ('scale', 'img_scale'):
        if transform.get(key) is not None:
            scale = _as_scale(transform[key], f'Resize.{key} in {where}', file)
            # 2.x Resize(img_scale) defaults to keep_ratio=True, 3.x Resize(scale) to False.
            keep_ratio = bool(transform.get('keep_ratio', key == 'img_scale'))
            return scale, keep_ratio, None
    if wrapper is not None:
        for key in ('img_scale', 'scale'):
            if wrapper.get(key) is not None:
                scale = _as_scale(wrapper[key], f'{transform_type(wrapper)}.{key} in {where}', file)
                return scale, bool(transform.get('keep_ratio', True)), None
    for owner, name in ((transform, 'Resize'), (wrapper or {}, transform_type(wrapper or {}))):
        factor = owner.get('scale_factor')
        if factor is None:
            continue
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
            raise ConfigError(
                f'{name}.scale_factor in {where} of {file} must be one positive number '
                f'(multi-scale testing is not supported), got {factor!r}'
            )
        return PreprocessConfig.scale, True, float(factor)
    raise missing_key_error(f'Resize.scale in {where}', file)


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------


def get_test_dataset_cfg(cfg: Config) -> dict:
    """``dict(ann_file=..., img_prefix=..., key=...)`` of the test set, paths joined with
    ``data_root``; ``key`` is the config key of the annotation file (for messages).

    3.x: ``test_dataloader.dataset`` (``data_root`` + ``ann_file``, ``data_root`` +
    ``data_prefix.img``); 2.x: ``data.test`` (``ann_file``, ``img_prefix``, usually already
    prefixed with ``data_root`` in the config text).
    """
    file = cfg_file(cfg)
    dataset = unwrap_dataset(lookup(cfg, 'test_dataloader.dataset'))
    if isinstance(dataset, Mapping):
        root = dataset.get('data_root')
        ann_file = dataset.get('ann_file')
        if not ann_file:
            raise missing_key_error('test_dataloader.dataset.ann_file', file)
        prefix = dataset.get('data_prefix') or {}
        if isinstance(prefix, Mapping):
            img = prefix.get('img', prefix.get('img_path', ''))
        else:
            img = prefix
        return dict(
            ann_file=join_root(root, ann_file),
            img_prefix=join_root(root, img or ''),
            key='test_dataloader.dataset.ann_file',
        )

    dataset = unwrap_dataset(lookup(cfg, 'data.test'))
    if isinstance(dataset, Mapping):
        root = dataset.get('data_root')
        ann_file = dataset.get('ann_file')
        if not ann_file:
            raise missing_key_error('data.test.ann_file', file)
        img = dataset.get('img_prefix') or ''
        return dict(
            ann_file=join_root(root, ann_file),
            img_prefix=join_root(root, img),
            key='data.test.ann_file',
        )

    raise missing_key_error('test_dataloader.dataset', file, 'or 2.x `data.test`')


def get_class_names(cfg: Config) -> tuple[str, ...] | None:
    """Class names written in the config, or ``None`` (then the checkpoint or dataset has them).

    Looked up in ``test_dataloader.dataset.metainfo.classes``, ``metainfo.classes``,
    ``data.test.classes`` and ``classes``. A string is a file with one name per line (2.x).
    """
    candidates = (
        lookup(unwrap_dataset(lookup(cfg, 'test_dataloader.dataset')), 'metainfo.classes'),
        lookup(cfg, 'metainfo.classes'),
        lookup(unwrap_dataset(lookup(cfg, 'data.test')), 'classes'),
        cfg.get('classes'),
    )
    for classes in candidates:
        if classes is None:
            continue
        if isinstance(classes, str):
            return read_class_file(classes, cfg_file(cfg))
        if isinstance(classes, (list, tuple)):
            return tuple(str(c) for c in classes)
        raise ConfigError(f'class names in {cfg_file(cfg)} must be a list, got {classes!r}')
    return None
