"""Read and write MMDetection checkpoints without mmcv/mmengine, and without trusting the pickle.

Layout (``shared/mmdet_models.md`` section 2.14)::

    {'meta': {'CLASSES': (...), ...}            # 2.x
     'meta': {'dataset_meta': {'classes': ...}}  # 3.x (mmengine)
     'state_dict': OrderedDict(key -> tensor),   # with ._metadata = {prefix: {'version': v}}
     'optimizer': ...}                           # ignored

Loading first tries ``torch.load(weights_only=True)``. Real checkpoints often fail that (numpy
scalars in ``meta``, mmengine ``HistoryBuffer``/``ConfigDict`` objects in 3.x training
checkpoints), so the fallback unpickles with :class:`RestrictedUnpickler`, which resolves only an
allow-list of globals, turns ``mmengine.*``/``mmcv.*``/``mmdet.*`` (and ``mmcls.*`` /
``mmpretrain.*``) objects into inert placeholders and refuses everything else, so a checkpoint
can never run code on load.

Per-module ``_version`` upgrades need no code here: ``Module.load_state_dict`` hands every
module's ``_load_from_state_dict`` its entry of ``state_dict._metadata``; we only keep that
metadata correct while renaming keys (e.g. stripping DDP's ``module.``).
"""

from __future__ import annotations

import codecs
import collections
import importlib
import io
import os
import pickle
import re
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..fileio import atomic_output
from ..finite import check_weights_finite

__all__ = [
    'RestrictedUnpickler',
    'load_checkpoint',
    'load_checkpoint_file',
    'restricted_pickle',
    'save_checkpoint',
    'strip_prefix',
]

# Globals of MMDetection-era libraries that only appear in ``meta`` (message hub, history
# buffers, configs, ...); they load as placeholders, never as the real classes.
_PLACEHOLDER_ROOTS = ('mmengine', 'mmcv', 'mmdet', 'mmcls', 'mmpretrain')

_NUMPY_FUNCTIONS = ('_reconstruct', 'scalar')


def _safe_globals() -> dict[tuple[str, str], Any]:
    """The allow-list: containers, tensor/storage rebuilders, numpy array/scalar reconstruction."""
    allowed: dict[tuple[str, str], Any] = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('builtins', 'set'): set,
        ('builtins', 'frozenset'): frozenset,
        ('builtins', 'complex'): complex,
        ('builtins', 'slice'): slice,
        # protocol-2 pickles store ``bytes`` as _codecs.encode(str, 'latin1')
        ('_codecs', 'encode'): codecs.encode,
        ('torch', 'Size'): torch.Size,
        ('torch', 'device'): torch.device,
        ('torch.nn.parameter', 'Parameter'): nn.Parameter,
        ('torch._tensor', '_rebuild_from_type_v2'): torch._tensor._rebuild_from_type_v2,
    }
    for name in (
        '_rebuild_tensor',
        '_rebuild_tensor_v2',
        '_rebuild_tensor_v3',
        '_rebuild_parameter',
        '_rebuild_parameter_with_state',
    ):
        allowed[('torch._utils', name)] = getattr(torch._utils, name)
    return allowed


_SAFE_GLOBALS = _safe_globals()


class _Placeholder(dict):
    """An inert stand-in for an ``mmengine``/``mmcv``/``mmdet`` object found in a checkpoint.

    It accepts whatever the pickle does to it (construction arguments, dict items, list items,
    ``__setstate__``) and keeps the data for inspection, but has no behaviour of its own.
    """

    pickled_global = ''

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        obj.list_items = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args = args
        if len(args) == 1 and isinstance(args[0], Mapping):  # e.g. ConfigDict({...}): keep items
            self.update(args[0])

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.list_items.append(item)

    def extend(self, items: Any) -> None:
        self.list_items.extend(items)

    def __repr__(self) -> str:
        return f'<placeholder {self.pickled_global}>'


_placeholder_classes: dict[str, type[_Placeholder]] = {}


def _placeholder(module: str, name: str) -> type[_Placeholder]:
    full = f'{module}.{name}'
    if full not in _placeholder_classes:
        _placeholder_classes[full] = type(name, (_Placeholder,), {'pickled_global': full})
    return _placeholder_classes[full]


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list (e.g. ``os.system``)."""

    def __init__(self, global_name: str) -> None:
        super().__init__(f'refused to load global `{global_name}`')
        self.global_name = global_name


def _attribute_of_placeholder(obj: Any, name: str) -> _Placeholder:
    """``getattr`` as pickles of bound methods use it, allowed on placeholders only.

    mmengine's ``HistoryBuffer`` pickles ``{'min': self.min, ...}`` as ``getattr(buffer, 'min')``.
    A real ``getattr`` could walk from any allowed object to ``eval`` (``__globals__``), so this
    one never looks anything up: it returns another inert placeholder.
    """
    owner = obj if isinstance(obj, type) else type(obj)
    if not issubclass(owner, _Placeholder) or not isinstance(name, str):
        raise RefusedGlobalError(f'builtins.getattr({owner.__name__}, {name!r})')
    return _placeholder(owner.pickled_global, name)()


# Python-2 module names that protocol-2 pickles still write.
_PY2_MODULES = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}


def _allowed_global(module: str, name: str) -> Any:
    """Resolve one pickled global, or raise :class:`RefusedGlobalError`."""
    module = _PY2_MODULES.get(module, module)
    if (module, name) == ('builtins', 'getattr'):
        return _attribute_of_placeholder
    found = _SAFE_GLOBALS.get((module, name))
    if found is not None:
        return found
    if module == 'torch':
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            return value
        if name.endswith('Storage') and isinstance(value, type):
            return value
    if module in ('numpy.core.multiarray', 'numpy._core.multiarray') and name in _NUMPY_FUNCTIONS:
        # numpy 2 pickles ``numpy._core``, numpy 1 ``numpy.core``; either loads on both.
        try:
            multiarray = importlib.import_module('numpy._core.multiarray')
        except ImportError:
            multiarray = importlib.import_module('numpy.core.multiarray')
        return getattr(multiarray, name)
    if module == 'numpy' and name in ('ndarray', 'dtype'):
        return getattr(importlib.import_module('numpy'), name)
    if module == 'numpy.dtypes' and name.endswith('DType'):
        value = getattr(importlib.import_module('numpy.dtypes'), name, None)
        if isinstance(value, type):
            return value
    if module.split('.', 1)[0] in _PLACEHOLDER_ROOTS:
        return _placeholder(module, name)
    raise RefusedGlobalError(f'{module}.{name}')


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allow-listed globals (see module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        return _allowed_global(module, name)


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs: Any) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# ``torch.load(pickle_module=...)`` subclasses ``pickle_module.Unpickler`` (zip format) and calls
# ``pickle_module.load`` (legacy format), so both must be the restricted ones.
restricted_pickle = types.ModuleType('deploy_restricted_pickle')
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load
restricted_pickle.loads = _restricted_loads
restricted_pickle.UnpicklingError = pickle.UnpicklingError
restricted_pickle.__doc__ = 'pickle look-alike whose Unpickler only resolves allow-listed globals'


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _torch_load(path: str) -> Any:
    """``torch.load`` safely: weights-only first, then the restricted unpickler."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as first_error:  # weights-only refusals and corrupt files look alike here
        try:
            # weights_only=False is required for a custom pickle_module; safety comes from it.
            return torch.load(
                path, map_location='cpu', pickle_module=restricted_pickle, weights_only=False
            )
        except RefusedGlobalError as e:
            raise CheckpointError(
                f'{path}: refusing to load: the pickle references `{e.global_name}`, which is not '
                'allowed in a checkpoint (only tensors, containers, numpy values and inert '
                'mmengine/mmcv/mmdet/mmcls/mmpretrain objects are)'
            ) from None
        except Exception as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f'{path} is not a PyTorch checkpoint (corrupt or truncated?): {reason}'
            ) from first_error


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _as_state_dict(obj: Mapping) -> OrderedDict:
    """An ``OrderedDict`` copy that keeps ``_metadata``."""
    state_dict = OrderedDict(obj)
    metadata = getattr(obj, '_metadata', None)
    if metadata is not None:
        state_dict._metadata = OrderedDict(metadata)
    return state_dict


def strip_prefix(state_dict: Mapping, prefix: str = 'module.') -> OrderedDict:
    """Drop a leading ``prefix`` from every key and from ``_metadata``'s module names.

    ``_metadata`` is keyed by module path without the trailing dot: ``'module.backbone'``
    becomes ``'backbone'`` and the wrapper's own ``'module'`` entry becomes the root ``''``,
    replacing the DDP wrapper's root entry, so version-based upgrades still see their versions.
    """
    result = OrderedDict(
        (k[len(prefix) :] if k.startswith(prefix) else k, v) for k, v in state_dict.items()
    )
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        bare = prefix.rstrip('.')
        renamed: OrderedDict = OrderedDict()
        for name, value in metadata.items():
            if name == bare:
                renamed[''] = value
            elif name.startswith(prefix):
                renamed[name[len(prefix) :]] = value
        for name, value in metadata.items():
            if name != bare and not name.startswith(prefix) and name not in renamed:
                renamed[name] = value
        result._metadata = renamed
    return result


def _class_names(meta: Mapping) -> tuple[str, ...] | None:
    classes = meta.get('CLASSES')
    if classes is None:
        dataset_meta = meta.get('dataset_meta')
        if isinstance(dataset_meta, Mapping):
            classes = dataset_meta.get('classes')
    if isinstance(classes, str):
        return (classes,)
    if isinstance(classes, (list, tuple)):
        return tuple(str(c) for c in classes)
    return None


def _split_checkpoint(obj: Any, source: str) -> dict:
    """``{'state_dict', 'meta', 'class_names'}`` from a loaded checkpoint or raw state dict."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f'{source} holds a {type(obj).__name__}, not a checkpoint dict or a state dict'
        )
    meta: Any = {}
    if isinstance(obj.get('state_dict'), Mapping):
        state_dict, meta = obj['state_dict'], obj.get('meta')
    elif _is_tensor_dict(obj):
        state_dict = obj
    elif _is_tensor_dict(obj.get('model')):  # e.g. detectron2 / DETR reference checkpoints
        state_dict = obj['model']
    else:
        keys = ', '.join(map(str, list(obj)[:10]))
        raise CheckpointError(f'{source} has no `state_dict` (top-level keys: {keys})')
    meta = dict(meta) if isinstance(meta, Mapping) else {}
    state_dict = strip_prefix(_as_state_dict(state_dict), 'module.')
    check_weights_finite(state_dict, source)
    if 'state_dict' in obj and 'class_names' in obj:  # a load_checkpoint_file() result
        class_names = obj['class_names']
    else:
        class_names = _class_names(meta)
    return dict(state_dict=state_dict, meta=meta, class_names=class_names)


def load_checkpoint_file(path: str | os.PathLike) -> dict:
    """Read a checkpoint file safely.

    Returns:
        ``dict(state_dict=OrderedDict, meta=dict, class_names=tuple | None)``. ``state_dict``
        keeps ``_metadata`` and has DDP's ``module.`` stripped; ``class_names`` comes from
        ``meta['CLASSES']`` (2.x) or ``meta['dataset_meta']['classes']`` (3.x).

    Raises:
        CheckpointError: missing file, not a PyTorch checkpoint, a refused pickled global, or no
            state dict inside.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    return _split_checkpoint(_torch_load(path), path)


# --------------------------------------------------------------------------------------------
# loading into a model
# --------------------------------------------------------------------------------------------

_SIZE_MISMATCH = re.compile(
    r'size mismatch for (?P<key>\S+): copying a param with shape torch\.Size\((?P<ckpt>\[.*?\])\)'
    r' from checkpoint, the shape in current model is torch\.Size\((?P<model>\[.*?\])\)'
)


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.strip('[]').split(',') if v.strip())


def _format_keys(keys: list[str], limit: int = 10) -> str:
    shown = ', '.join(keys[:limit])
    if len(keys) > limit:
        shown += f', ... (+{len(keys) - limit} more)'
    return shown


def _format_mismatched(items: list[tuple[str, tuple, tuple]], limit: int = 10) -> str:
    lines = [f'{k}: checkpoint {list(c)} vs model {list(m)}' for k, c, m in items[:limit]]
    if len(items) > limit:
        lines.append(f'... (+{len(items) - limit} more)')
    return '; '.join(lines)


def _report_lines(missing: list, unexpected: list, mismatched: list, limit: int) -> list[str]:
    lines = []
    if missing:
        lines.append(f'missing keys ({len(missing)}): {_format_keys(missing, limit)}')
    if unexpected:
        lines.append(f'unexpected keys ({len(unexpected)}): {_format_keys(unexpected, limit)}')
    if mismatched:
        lines.append(
            f'shape-mismatched keys, not loaded ({len(mismatched)}): '
            f'{_format_mismatched(mismatched, limit)}'
        )
    return lines


def load_checkpoint(
    model: nn.Module,
    path_or_dict: str | os.PathLike | Mapping,
    strict: bool = False,
    logger: Callable[[str], Any] | Any | None = print,
) -> dict:
    """Load a checkpoint into ``model`` and report what did not match.

    Keys whose shapes differ from the model's are left out (the model keeps its values) and
    reported with both shapes. Per-module version upgrades run through each module's
    ``_load_from_state_dict``, so missing/unexpected keys are those left *after* the upgrades.

    Args:
        model: the detector (or any module).
        path_or_dict: a checkpoint file, the result of :func:`load_checkpoint_file`, an
            MMDetection checkpoint dict, or a plain state dict.
        strict: raise :class:`CheckpointError` if any key is missing, unexpected or mismatched
            (the compatible keys have been loaded by then).
        logger: ``print``-like callable, a ``logging.Logger``, or ``None`` for silence.

    Returns:
        ``dict(meta, class_names, missing, unexpected, mismatched)`` with ``mismatched`` a list
        of ``(key, checkpoint_shape, model_shape)``.
    """
    if isinstance(path_or_dict, Mapping):
        source = '<checkpoint dict>'
        checkpoint = _split_checkpoint(path_or_dict, source)
    else:
        source = os.fspath(path_or_dict)
        checkpoint = load_checkpoint_file(source)
    state_dict: OrderedDict = checkpoint['state_dict']

    model_state = model.state_dict()
    mismatched: list[tuple[str, tuple, tuple]] = []
    to_load = OrderedDict()
    for key, value in state_dict.items():
        target = model_state.get(key)
        if (
            isinstance(value, torch.Tensor)
            and isinstance(target, torch.Tensor)
            and value.shape != target.shape
        ):
            mismatched.append((key, tuple(value.shape), tuple(target.shape)))
        else:
            to_load[key] = value
    if hasattr(state_dict, '_metadata'):
        to_load._metadata = state_dict._metadata

    # Missing/unexpected are read at the root after all upgrade hooks ran; the hook also sees them
    # when load_state_dict raises (for keys that only mismatch after an upgrade renamed them).
    seen: dict[str, list[str]] = {}

    def capture(module: nn.Module, incompatible: Any) -> None:
        seen['missing'] = list(incompatible.missing_keys)
        seen['unexpected'] = list(incompatible.unexpected_keys)

    handle = model.register_load_state_dict_post_hook(capture)
    try:
        model.load_state_dict(to_load, strict=False)
    except RuntimeError as e:
        other = []
        for line in str(e).splitlines()[1:]:
            found = _SIZE_MISMATCH.search(line)
            if found:
                mismatched.append((found['key'], _shape(found['ckpt']), _shape(found['model'])))
            elif line.strip():
                other.append(line.strip())
        if other or not seen:
            raise CheckpointError(f'cannot load {source} into the model: {e}') from e
    finally:
        handle.remove()

    mismatched_keys = {k for k, _, _ in mismatched}
    missing = [k for k in seen.get('missing', []) if k not in mismatched_keys]
    unexpected = seen.get('unexpected', [])

    log = getattr(logger, 'info', logger)
    if log is not None:
        lines = _report_lines(missing, unexpected, mismatched, limit=10)
        head = f'load checkpoint {source}: '
        log(head + ('all keys matched' if not lines else '; '.join(lines)))
    if strict and (missing or unexpected or mismatched):
        details = '; '.join(_report_lines(missing, unexpected, mismatched, limit=20))
        raise CheckpointError(f'checkpoint {source} does not match the model (strict): {details}')

    return dict(
        meta=checkpoint['meta'],
        class_names=checkpoint['class_names'],
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
    )


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def save_checkpoint(
    model_or_state_dict: nn.Module | Mapping, path: str | os.PathLike, meta: dict | None = None
) -> str:
    """Write ``{'meta': {'CLASSES': ..., ...}, 'state_dict': ...}`` as MMDetection does, atomically.

    The file is written to ``path + '.tmp'`` and renamed over ``path``, so a crash never leaves a
    partial checkpoint. ``meta['CLASSES']`` is filled from ``meta['dataset_meta']['classes']`` or
    the model's ``CLASSES``/``class_names`` attribute when not given. Returns ``path``.
    """
    path = os.fspath(path)
    source = model_or_state_dict
    if isinstance(source, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        source = source.module
    state = source.state_dict() if isinstance(source, nn.Module) else source
    state_dict = OrderedDict(
        (k, v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items()
    )
    metadata = getattr(state, '_metadata', None)
    if metadata is not None:
        state_dict._metadata = OrderedDict(metadata)

    meta = dict(meta or {})
    if meta.get('CLASSES') is None:
        classes = _class_names(meta)
        if classes is None and isinstance(source, nn.Module):
            classes = getattr(source, 'CLASSES', None) or getattr(source, 'class_names', None)
        if classes is not None:
            meta['CLASSES'] = tuple(classes)
    elif isinstance(meta['CLASSES'], list):
        meta['CLASSES'] = tuple(meta['CLASSES'])
    meta.setdefault('time', time.asctime())

    with atomic_output(path) as f:
        torch.save({'meta': meta, 'state_dict': state_dict}, f)
    return path
