"""Which data-set category each model label is scored as: checked, never assumed.

A model trained on one label order and evaluated against annotations in another scores
"normally" and wrongly. So by default the model's class names must equal the data set's category
names, in order; anything else stops the evaluation unless the user says how to map them
(``--class-map``):

* ``name``: match by name (a model class missing from the data set is not scored; a data-set
  category the model lacks scores 0 AP);
* ``index``: label ``i`` is the data set's ``i``-th category (by id), whatever the names say:
  for models whose classes stand for the data set's by position (random weights with numbered
  classes in a parity check against a reference's own detections);
* a ``.json`` file ``{"model class": "data-set category", ...}`` for renamed classes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError

MODES = ('name', 'index')
#: label -> category id for labels that are not scored
UNSCORED = -1


def _preview(names: Sequence[str], limit: int = 6) -> str:
    shown = ', '.join(names[:limit])
    return shown + (', ...' if len(names) > limit else '')


def resolve_class_map(
    model_classes: Sequence[str] | None,
    num_classes: int,
    categories: Sequence[str],
    cat_ids: Sequence[int],
    class_map: str | None = None,
) -> list[int]:
    """The category id of every model label (:data:`UNSCORED` for labels not scored).

    Args:
        model_classes: the model's class names in label order (``None``: unnamed).
        num_classes: the model head's number of classes (used when unnamed).
        categories, cat_ids: the data set's category names and ids, sorted by id.
        class_map: ``None`` (names and order must match), ``'name'``, ``'index'`` or a
            ``.json`` file mapping model class names to category names.

    Raises:
        ConfigError: the classes do not match and no mapping was given, or the mapping names a
            class or category that does not exist.
    """
    categories, cat_ids = list(categories), [int(c) for c in cat_ids]
    num_labels = len(model_classes) if model_classes else num_classes
    if class_map == 'index':
        return [cat_ids[i] if i < len(cat_ids) else UNSCORED for i in range(num_labels)]
    if class_map is None:
        if model_classes is None:
            if num_classes and num_classes != len(categories):
                raise ConfigError(
                    f'the model predicts {num_classes} classes but the data set has '
                    f'{len(categories)} categories ({_preview(categories)}); pass --class-map '
                    'index to score label i as the i-th category'
                )
            return cat_ids[:num_labels] if num_labels else cat_ids
        if list(model_classes) == categories:
            return cat_ids
        raise ConfigError(_mismatch_message(list(model_classes), categories))
    if model_classes is None:
        raise ConfigError(
            f'--class-map {class_map} maps class names, but the model names none (its '
            'checkpoint has no CLASSES): use --class-map index'
        )
    if class_map == 'name':
        mapping = {name: name for name in model_classes}
        by_name = {name: cid for name, cid in zip(categories, cat_ids)}
        if not set(model_classes) & set(categories):
            raise ConfigError(
                f'--class-map name: no model class ({_preview(list(model_classes))}) is a '
                f'category of the data set ({_preview(categories)})'
            )
        return [by_name.get(mapping[name], UNSCORED) for name in model_classes]
    return _from_file(Path(class_map), list(model_classes), categories, cat_ids)


def _mismatch_message(model: list[str], data: list[str]) -> str:
    if len(model) != len(data):
        detail = (
            f'the model has {len(model)} classes ({_preview(model)}), the data set '
            f'{len(data)} categories ({_preview(data)})'
        )
    elif sorted(model) == sorted(data):
        i = next(k for k, (a, b) in enumerate(zip(model, data)) if a != b)
        detail = (
            f'same names in another order: label {i} is {model[i]!r} in the model but '
            f'{data[i]!r} in the data set'
        )
    else:
        i = next(k for k, (a, b) in enumerate(zip(model, data)) if a != b)
        detail = f'label {i} is {model[i]!r} in the model but {data[i]!r} in the data set'
    return (
        f"the model's classes do not match the data set's categories ({detail}); pass "
        '--class-map name (match by name), --class-map index (by position) or --class-map '
        'FILE.json'
    )


def _from_file(path: Path, model: list[str], categories: list[str], cat_ids: list[int]):
    if path.suffix != '.json':
        raise ConfigError(f'--class-map must be name, index or a .json file, got {str(path)!r}')
    if not path.is_file():
        raise ConfigError(f'class map file not found: {path}')
    try:
        mapping = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f'class map {path} is not valid JSON: {err}') from None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ConfigError(f'class map {path} must be a JSON object of class name -> category')
    for key in mapping:
        if key not in model:
            raise ConfigError(f'class map {path} names {key!r}, which is not a model class')
    by_name = dict(zip(categories, cat_ids))
    for value in mapping.values():
        if value not in by_name:
            raise ConfigError(
                f'class map {path} maps to {value!r}, which is not a data-set category'
            )
    return [by_name[mapping[name]] if name in mapping else UNSCORED for name in model]
