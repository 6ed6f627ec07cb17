"""What a classifier config (MMClassification 0.x or MMPretrain 1.x) says about its test-time
pre-processing and test data set.

MMClassification 0.x (``data.test``)::

    Normalize(mean, std, to_rgb) in the pipeline
    Resize(size=(256, -1), backend='pillow')   # (s, -1): short edge; adaptive_side='long', ...
    Resize(size=224) / Resize(size=(h, w))     # exactly that size
    CenterCrop(crop_size=224)                  # int or (h, w)
    data.test = dict(type='ImageNet', data_prefix=..., ann_file=..., classes=...)

MMPretrain 1.x (``test_dataloader.dataset``)::

    data_preprocessor = dict(mean, std, to_rgb)   # top level, or model.data_preprocessor
    ResizeEdge(scale=256, edge='short', backend='pillow', interpolation='bilinear')
    Resize(scale=224) / Resize(scale=(w, h))      # mmcv's Resize, exactly that size
    CenterCrop(crop_size=224)                     # int or (w, h): mmcv 2.x order
    test_dataloader.dataset = dict(type='ImageNet', data_root, data_prefix, ann_file, ...)

A transform that changes pixels and is not listed here is refused (rather than skipped, which
would evaluate another pre-processing than the config's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..spec import PreprocessConfig, registry_type_name
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
    'CLASSIFIER_TYPES',
    'PASS_THROUGH_TRANSFORMS',
    'get_classification_dataset_cfg',
    'get_classifier_preprocess_cfg',
    'is_classifier_cfg',
    'is_mmcls_0x',
    'read_crop',
    'read_resize',
]

#: model types that classify whole images (no detection settings, ``scores`` output)
CLASSIFIER_TYPES = ('ImageClassifier',)

#: transforms that only load, pack or convert: nothing to do at inference
PASS_THROUGH_TRANSFORMS = frozenset(
    {
        'LoadImageFromFile',
        'PackInputs',
        'PackClsInputs',
        'ImageToTensor',
        'ToTensor',
        'Collect',
        'Transpose',
        'ToNumpy',
    }
)
RESIZE_EDGES = ('short', 'long', 'width', 'height')
INTERPOLATIONS = {
    'cv2': ('nearest', 'bilinear', 'bicubic', 'area', 'lanczos'),
    'pillow': ('nearest', 'bilinear', 'bicubic', 'box', 'lanczos', 'hamming'),
}


def is_classifier_cfg(cfg) -> bool:
    """Whether the config's model is an image classifier."""
    model = cfg.get('model')
    return isinstance(model, Mapping) and (
        registry_type_name(model.get('type', '')) in CLASSIFIER_TYPES
    )


def is_mmcls_0x(cfg) -> bool:
    """MMClassification 0.x configs keep their data in ``data``, 1.x in ``*_dataloader``."""
    return isinstance(cfg.get('data'), Mapping) and not isinstance(
        cfg.get('test_dataloader'), Mapping
    )


def _positive_int(value: Any, where: str, file: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f'{where} in {file} must be a positive integer, got {value!r}')
    return value


def _size_pair(value: Any, where: str, file: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ConfigError(f'{where} in {file} must be an int or a pair, got {value!r}')
    return tuple(_positive_int(v, where, file) for v in value)  # type: ignore[return-value]


def _backend_and_interpolation(transform: Mapping, where: str, file: str) -> tuple[str, str]:
    backend = transform.get('backend', 'cv2')
    interpolation = transform.get('interpolation', 'bilinear')
    if backend not in INTERPOLATIONS:
        raise ConfigError(f'{where}.backend in {file} must be cv2 or pillow, got {backend!r}')
    if interpolation not in INTERPOLATIONS[backend]:
        raise ConfigError(
            f'{where}.interpolation={interpolation!r} in {file} is not available with the '
            f'{backend} backend ({", ".join(INTERPOLATIONS[backend])})'
        )
    return backend, interpolation


def read_resize(transform: Mapping, name: str, where: str, file: str) -> dict:
    """The resize fields of :class:`PreprocessConfig` from one classifier resize transform."""
    backend, interpolation = _backend_and_interpolation(transform, f'{name} in {where}', file)
    common = dict(resize_backend=backend, interpolation=interpolation)
    if name == 'ResizeEdge':
        scale = _positive_int(transform.get('scale'), f'ResizeEdge.scale in {where}', file)
        edge = transform.get('edge', 'short')
        if edge not in RESIZE_EDGES:
            raise ConfigError(
                f'ResizeEdge.edge in {where} of {file} must be one of {RESIZE_EDGES}, got {edge!r}'
            )
        return dict(common, scale=(scale, scale), keep_ratio=True, resize_edge=edge)
    if transform.get('size') is not None:  # MMClassification 0.x: size=(h, w), (s, -1) or s
        size = transform['size']
        if isinstance(size, (list, tuple)) and len(size) == 2 and size[1] == -1:
            scale = _positive_int(size[0], f'Resize.size in {where}', file)
            edge = transform.get('adaptive_side', 'short')
            if edge not in RESIZE_EDGES:
                raise ConfigError(
                    f'Resize.adaptive_side in {where} of {file} must be one of {RESIZE_EDGES}, '
                    f'got {edge!r}'
                )
            return dict(common, scale=(scale, scale), keep_ratio=True, resize_edge=edge)
        h, w = _size_pair(size, f'Resize.size in {where}', file)
        return dict(common, scale=(w, h), keep_ratio=False, resize_edge=None)
    if transform.get('scale') is not None:  # mmcv 2.x Resize: scale=(w, h) or s
        if transform.get('keep_ratio'):
            raise ConfigError(
                f'Resize(keep_ratio=True) in {where} of {file} is not supported for classifiers: '
                'use ResizeEdge (or keep_ratio=False)'
            )
        w, h = _size_pair(transform['scale'], f'Resize.scale in {where}', file)
        return dict(common, scale=(w, h), keep_ratio=False, resize_edge=None)
    raise missing_key_error(f'Resize.size in {where}', file)


def read_crop(transform: Mapping, where: str, file: str, order_wh: bool) -> tuple[int, int]:
    """``(h, w)`` of a CenterCrop; 1.x (mmcv 2.x) writes pairs as ``(w, h)``, 0.x as ``(h, w)``."""
    for flag in ('efficientnet_style', 'auto_pad'):
        if transform.get(flag):
            raise ConfigError(f'CenterCrop({flag}=True) in {where} of {file} is not supported')
    crop = _size_pair(transform.get('crop_size'), f'CenterCrop.crop_size in {where}', file)
    return (crop[1], crop[0]) if order_wh else crop


def _normalisation(values: Mapping, where: str, file: str, default_to_rgb: bool) -> tuple:
    to_rgb = values.get('to_rgb', values.get('bgr_to_rgb', default_to_rgb))
    return (
        where,
        three_numbers(values.get('mean'), f'{where}.mean', file),
        three_numbers(values.get('std'), f'{where}.std', file),
        bool(to_rgb),
    )


def get_classifier_preprocess_cfg(cfg) -> PreprocessConfig:
    """The test-time pre-processing of a classifier config (see the module docstring).

    Raises:
        ConfigError: no or two normalisations, no resize, a bad value, or a transform that
            changes pixels in a way not implemented here.
    """
    file = cfg_file(cfg)
    found = find_test_pipeline(cfg)
    where, pipeline = found if found else ('test pipeline', [])
    normalisations: list[tuple] = []
    size_divisor, pad_value = None, 0.0
    # MMEngine's runner gives the model the top-level data_preprocessor unless it has its own.
    for key in ('model.data_preprocessor', 'data_preprocessor'):
        preprocessor = lookup(cfg, key)
        if isinstance(preprocessor, Mapping) and preprocessor.get('mean') is not None:
            # ClsDataPreprocessor's to_rgb defaults to False
            normalisations.append(_normalisation(preprocessor, key, file, False))
            divisor = preprocessor.get('pad_size_divisor')
            size_divisor = int(divisor) if divisor and int(divisor) > 1 else None
            pad_value = float(preprocessor.get('pad_value', 0) or 0)
            break

    resize: dict | None = None
    crop = None
    for transform, _wrapper in walk_transforms(pipeline):
        name = transform_type(transform)
        if name == 'Normalize':
            normalisations.append(_normalisation(transform, f'Normalize in {where}', file, True))
        elif name in ('Resize', 'ResizeEdge'):
            if resize is not None or crop is not None:
                raise ConfigError(
                    f'{name} in {where} of {file} follows another resize or crop: classifiers '
                    'support one resize, then one centre crop'
                )
            resize = read_resize(transform, name, where, file)
        elif name == 'CenterCrop':
            if crop is not None:
                raise ConfigError(f'two CenterCrop steps in {where} of {file}')
            crop = read_crop(transform, where, file, order_wh=not is_mmcls_0x(cfg))
        elif name not in PASS_THROUGH_TRANSFORMS:
            raise ConfigError(
                f'{name} in {where} of {file} is not supported for classifiers (supported: '
                'Resize, ResizeEdge, CenterCrop, Normalize)'
            )

    if not normalisations:
        raise ConfigError(
            f'no normalisation found in {file}: neither `data_preprocessor.mean` nor a '
            f'`Normalize` step in `{where}`'
        )
    if len(normalisations) > 1:
        places = ', '.join(n[0] for n in normalisations)
        raise ConfigError(f'ambiguous normalisation in {file}: found {places}; keep exactly one')
    if resize is None:
        raise ConfigError(
            f'no `Resize` or `ResizeEdge` in `{where}` of {file}: the test-time input size is '
            'needed'
        )
    _, mean, std, to_rgb = normalisations[0]
    return PreprocessConfig(
        mean=mean,
        std=std,
        to_rgb=to_rgb,
        size_divisor=size_divisor,
        pad_value=pad_value,
        crop_size=crop,
        **resize,
    )


# --------------------------------------------------------------------------------------------
# test data set
# --------------------------------------------------------------------------------------------


def _classes(dataset: Mapping, file: str) -> tuple[str, ...] | None:
    classes = lookup(dataset, 'metainfo.classes')
    if classes is None:
        classes = dataset.get('classes')
    if classes is None:
        return None
    if isinstance(classes, str):
        return read_class_file(classes, file)
    if isinstance(classes, (list, tuple)):
        return tuple(str(c) for c in classes)
    raise ConfigError(f'class names in {file} must be a list or a file, got {classes!r}')


def get_classification_dataset_cfg(cfg) -> dict:
    """``dict(ann_file, img_prefix, classes, key)`` of a classifier's test set.

    ``ann_file`` is ``None`` when the config gives none (then the images are found in one
    sub-folder per class under ``img_prefix``); paths are joined with ``data_root`` (1.x).
    ``key`` names the config key of the image folder, for messages.

    * 1.x: ``test_dataloader.dataset``: ``data_root``, ``ann_file``, ``data_prefix`` (a path or
      ``dict(img_path=...)``), ``metainfo.classes`` / ``classes``;
    * 0.x: ``data.test``: ``data_prefix``, ``ann_file``, ``classes``.
    """
    file = cfg_file(cfg)
    dataset = unwrap_dataset(lookup(cfg, 'test_dataloader.dataset'))
    if isinstance(dataset, Mapping):
        root = dataset.get('data_root') or ''
        prefix = dataset.get('data_prefix') or ''
        if isinstance(prefix, Mapping):
            prefix = prefix.get('img_path', prefix.get('img', '')) or ''
        ann_file = dataset.get('ann_file') or None
        return dict(
            ann_file=join_root(root, ann_file) if ann_file else None,
            img_prefix=join_root(root, prefix) if prefix else root,
            classes=_classes(dataset, file),
            key='test_dataloader.dataset',
        )
    dataset = unwrap_dataset(lookup(cfg, 'data.test'))
    if isinstance(dataset, Mapping):
        prefix = dataset.get('data_prefix')
        if not prefix:
            raise missing_key_error('data.test.data_prefix', file)
        return dict(
            ann_file=dataset.get('ann_file') or None,
            img_prefix=prefix,
            classes=_classes(dataset, file),
            key='data.test',
        )
    raise missing_key_error('test_dataloader.dataset', file, 'or 0.x `data.test`')
