"""Saying what a class map does, so that a map which merges or drops classes is never silent.

:func:`describe_class_map` lists, before the run, which model classes are merged into one
category, which are left out (never scored) and which categories no label scores (0 AP);
:func:`count_left_out` says after the run how many detections the map removed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from .class_map import UNSCORED


def _names(names: Sequence[str], limit: int = 6) -> str:
    shown = ', '.join(repr(n) for n in names[:limit])
    return shown + (f' and {len(names) - limit} more' if len(names) > limit else '')


def _label_names(model_classes: Sequence[str] | None, num_labels: int) -> list[str]:
    return list(model_classes) if model_classes else [f'label {i}' for i in range(num_labels)]


def describe_class_map(
    label_to_cat: Sequence[int],
    model_classes: Sequence[str] | None,
    categories: Sequence[str],
    cat_ids: Sequence[int],
) -> list[str]:
    """One line per thing the map does beyond renaming: merges, left-out classes, unscored
    categories; empty when every label maps to its own category and every category is scored."""
    labels = _label_names(model_classes, len(label_to_cat))
    name_of = dict(zip((int(c) for c in cat_ids), categories))
    lines = []
    counts = Counter(c for c in label_to_cat if c != UNSCORED)
    for cat, n in counts.items():
        if n > 1:
            merged = [labels[i] for i, c in enumerate(label_to_cat) if c == cat]
            lines.append(
                f'class map merges {n} model classes into {name_of[cat]!r}: {_names(merged)}'
            )
    left_out = [labels[i] for i, c in enumerate(label_to_cat) if c == UNSCORED]
    if left_out:
        lines.append(
            f'class map leaves out {len(left_out)} of {len(labels)} model classes '
            f'(their detections are not scored): {_names(left_out)}'
        )
    unscored = [name_of[int(c)] for c in cat_ids if int(c) not in counts]
    if unscored:
        lines.append(
            f'class map scores no label as {len(unscored)} data-set categories (they score 0 AP '
            f'where they have objects): {_names(unscored)}'
        )
    return lines


def count_left_out(results, label_to_cat: Sequence[int]) -> tuple[int, int]:
    """``(left out, total)``: detections of ``results`` whose label the map does not score."""
    unscored = np.array([c == UNSCORED for c in label_to_cat] + [True])
    total = sum(len(r.labels) for r in results)
    dropped = 0
    for r in results:
        labels = np.asarray(r.labels, dtype=np.int64)
        labels = np.where((labels < 0) | (labels >= len(label_to_cat)), len(label_to_cat), labels)
        dropped += int(unscored[labels].sum())
    return dropped, total


def left_out_line(results, label_to_cat: Sequence[int]) -> str | None:
    """The line that says how many detections the map removed (None when it removed none)."""
    dropped, total = count_left_out(results, label_to_cat)
    if not dropped:
        return None
    if dropped == total:
        return (
            f'warning: the class map leaves out all {total} detections the model returned: '
            'nothing is scored'
        )
    return f'note: the class map leaves out {dropped} of {total} detections (not scored)'
