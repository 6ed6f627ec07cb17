"""Reading a config tree: the small helpers that the detection reader (:mod:`.loader`) and the
classifier reader (:mod:`.classification`) share."""

from __future__ import annotations

import os.path as osp
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mmengine.config import Config

from ..errors import ConfigError


def cfg_file(cfg: Config | Mapping) -> str:
    name = getattr(cfg, 'filename', None)
    return name or '<config>'


def missing_key_error(key: str, cfg: Config | Mapping | str, detail: str = '') -> ConfigError:
    """The one wording for "the pipeline needs a key the config lacks".

    >>> str(missing_key_error('model', 'configs/x.py'))
    '`model` missing in configs/x.py'
    """
    file = cfg if isinstance(cfg, str) else cfg_file(cfg)
    message = f'`{key}` missing in {file}'
    if detail:
        message += f' ({detail})'
    return ConfigError(message)


def lookup(node: Any, dotted: str) -> Any:
    """``node.a.b.c`` for a dotted key, or ``None`` when any step is missing."""
    for part in dotted.split('.'):
        if not isinstance(node, (Mapping, Config)) or part not in node:
            return None
        node = node.get(part)
    return node


def unwrap_dataset(dataset: Any) -> Any:
    """Descend through dataset wrappers (``RepeatDataset(dataset=...)``) and multi-set lists."""
    while True:
        if isinstance(dataset, (list, tuple)) and dataset:
            dataset = dataset[0]
        elif isinstance(dataset, Mapping) and 'pipeline' not in dataset and 'dataset' in dataset:
            dataset = dataset['dataset']
        elif (
            isinstance(dataset, Mapping)
            and 'pipeline' not in dataset
            and isinstance(dataset.get('datasets'), (list, tuple))
            and dataset['datasets']
        ):
            dataset = dataset['datasets'][0]
        else:
            return dataset


def _dataset(cfg: Config, key: str) -> Any:
    return unwrap_dataset(lookup(cfg, key))


def find_test_pipeline(cfg: Config) -> tuple[str, list] | None:
    """The test pipeline and where it was found: 3.x dataloader, 2.x ``data.test``, top level."""
    candidates = (
        (
            'test_dataloader.dataset.pipeline',
            unwrap_dataset(lookup(cfg, 'test_dataloader.dataset')),
        ),
        ('data.test.pipeline', _dataset(cfg, 'data.test')),
    )
    for where, dataset in candidates:
        pipeline = lookup(dataset, 'pipeline')
        if isinstance(pipeline, (list, tuple)):
            return where, list(pipeline)
    pipeline = cfg.get('test_pipeline')
    if isinstance(pipeline, (list, tuple)):
        return 'test_pipeline', list(pipeline)
    return None


def walk_transforms(
    pipeline: Sequence, wrapper: Mapping | None = None
) -> Iterator[tuple[Mapping, Mapping | None]]:
    """Yield ``(transform, enclosing MultiScaleFlipAug or None)`` depth first."""
    for transform in pipeline:
        if not isinstance(transform, Mapping):
            continue
        inner = transform.get('transforms')
        if isinstance(inner, (list, tuple)) and inner and isinstance(inner[0], Mapping):
            yield from walk_transforms(inner, transform)
        else:
            yield transform, wrapper


def transform_type(transform: Mapping) -> str:
    name = transform.get('type', '')
    name = name if isinstance(name, str) else getattr(name, '__name__', str(name))
    return name.rsplit('.', 1)[-1]  # 'mmdet.Resize' -> 'Resize'


def three_numbers(value: Any, where: str, file: str) -> tuple[float, float, float]:
    if isinstance(value, (list, tuple)) and len(value) == 3:
        try:
            return tuple(float(v) for v in value)  # type: ignore[return-value]
        except (TypeError, ValueError):
            pass
    raise ConfigError(f'{where} in {file} must be 3 numbers, got {value!r}')


def join_root(root: str | None, path: str) -> str:
    if not root or osp.isabs(path):
        return path
    return osp.join(root, path)


def read_class_file(path: str, file: str) -> tuple[str, ...]:
    try:
        with open(path, encoding='utf-8') as f:
            return tuple(line.strip() for line in f if line.strip())
    except OSError as e:
        raise ConfigError(f'class-name file {path} named in {file} cannot be read: {e}') from e
