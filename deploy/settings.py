"""Typed settings from config dicts: one parser for every settings dataclass (test-time
post-processing in :mod:`deploy.spec`, training in :mod:`deploy.training.settings`), with one
clear error per bad key.

A settings class is a dataclass whose fields are its keys; optional class attributes refine it:

* ``LEGACY_KEYS``: old key name -> current one (``'nms_thr': 'nms.iou_threshold'`` fills a
  nested key), or ``None`` for a key that is accepted and ignored;
* ``CHOICES``: key -> its allowed values;
* ``check_legacy(key, value, where)`` (classmethod): refuses what a legacy key asks for;
* ``check_raw(values, where)`` (classmethod): refuses a dict before its keys are checked (e.g.
  an assigner ``type`` the class does not implement, whose keys would all be unknown);
* ``check_parsed(self, where)``: refuses a combination of values once the settings are built.

This module sits at the bottom of the package: it imports nothing of ours but the errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar('T')


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` as ``annotation`` (int, float, bool, str, tuples, nested settings)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # ``tuple[int, ...] | int``: the first that fits
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        return _coerce(value, inner[-1], where)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f'{where} must be a dict, got {value!r}')
        return parse_settings(annotation, value, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f'{where} must be True or False, got {value!r}')
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(f'{where} must be an integer, got {value!r}')
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{where} must be a number, got {value!r}')
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f'{where} must be a string, got {value!r}')
        return value
    if origin is tuple:
        return _coerce_tuple(value, args, where)
    if annotation is dict or origin is dict:  # a sub-dict read by someone else (a transform)
        if not isinstance(value, Mapping):
            raise ConfigError(f'{where} must be a dict, got {value!r}')
        return value
    return value


def _coerce_tuple(value: Any, args: tuple, where: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f'{where} must be a list, got {value!r}')
    item = args[0] if args else Any
    if len(args) == 2 and args[1] is Ellipsis or len(set(args)) == 1:
        return tuple(_coerce(v, item, f'{where}[{i}]') for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f'{where} must have {len(args)} items, got {value!r}')
    return tuple(_coerce(v, a, f'{where}[{i}]') for i, (v, a) in enumerate(zip(value, args)))


def unknown_key_error(key: str, known: Iterable[str], where: str) -> ConfigError:
    """``unknown key `model.test_cfg.scor_thr`; did you mean `score_thr`?`` (one line)."""
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f'; did you mean `{close[0]}`?' if close else f' (known keys: {", ".join(known)})'
    return ConfigError(f'unknown key `{where}.{key}`{hint}')


def _current_keys(cls: type, values: Mapping, where: str) -> dict[str, Any]:
    """``values`` under the current key names: legacy keys renamed (nested ones merged under
    their parent, the parent's own values first), ignored ones dropped, unknown ones refused."""
    known = {f.name for f in dataclasses.fields(cls)}
    legacy = getattr(cls, 'LEGACY_KEYS', {})
    kwargs: dict[str, Any] = {}
    nested: dict[str, dict] = {}
    for key, value in values.items():
        if key in legacy:
            target = legacy[key]
            if hasattr(cls, 'check_legacy'):
                cls.check_legacy(key, value, where)
            if target is None:
                continue
            if '.' in target:  # e.g. nms_thr -> nms.iou_threshold
                outer, inner = target.split('.', 1)
                nested.setdefault(outer, {})[inner] = value
                continue
            key = target
        if key not in known:
            raise unknown_key_error(key, known | set(legacy), where)
        kwargs[key] = value
    for outer, inner in nested.items():
        merged = dict(kwargs.get(outer) or {})
        for k, v in inner.items():
            merged.setdefault(k, v)
        kwargs[outer] = merged
    return kwargs


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a settings class (resolving them is most of a parse)."""
    return typing.get_type_hints(cls)


def parse_settings(cls: type[T], values: Mapping | None, where: str) -> T:
    """Build the settings dataclass ``cls`` from a config dict, checking every key.

    Args:
        cls: a settings dataclass (:class:`~deploy.spec.DenseSettings`, ...).
        values: the config's dict (``None``: every default; an instance of ``cls``: itself).
        where: the dotted config path, for errors (``model.test_cfg.rcnn``).

    Raises:
        ConfigError: an unknown key (with the closest known one), a value of the wrong type, or
            a value outside the allowed choices.
    """
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f'`{where}` must be a dict, got {values!r}')
    if hasattr(cls, 'check_raw'):
        cls.check_raw(values, where)
    annotations = _field_types(cls)
    kwargs = _current_keys(cls, values, where)
    for key, value in list(kwargs.items()):
        kwargs[key] = _coerce(value, annotations[key], f'{where}.{key}')
    for key, allowed in getattr(cls, 'CHOICES', {}).items():
        if key in kwargs and kwargs[key] not in allowed:
            raise ConfigError(
                f'`{where}.{key}` must be one of {", ".join(map(repr, allowed))}, '
                f'got {kwargs[key]!r}'
            )
    settings = cls(**kwargs)
    if hasattr(settings, 'check_parsed'):
        settings.check_parsed(where)
    return settings
