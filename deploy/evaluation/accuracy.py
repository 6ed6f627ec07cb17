"""Top-k accuracy of a classifier (MMPretrain's ``Accuracy`` metric) and pseudo labels for
accuracy parity without real labels.

A sample counts as correct at ``k`` when its label is among the ``k`` highest scores and that
score is above ``thr`` (MMPretrain's default ``thr=0.0``). Ties are broken by the lower class
index, the same way for every backend. Accuracies are in percent, under MMPretrain's keys
``accuracy/top1``, ``accuracy/top5``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..fileio import write_atomic


def topk_labels(scores: np.ndarray, k: int) -> np.ndarray:
    """``[N, k]`` class indices of ``scores [N, C]`` by decreasing score, ties by lower index."""
    scores = np.asarray(scores)
    index = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    # lexsort's last key is the primary one; it is stable, so equal scores keep index order.
    order = np.lexsort((index, -scores), axis=1)
    return order[:, :k].astype(np.int64)


def accuracy(
    scores: np.ndarray, gt_labels: np.ndarray, topk: Sequence[int] = (1, 5), thr: float = 0.0
) -> dict[str, float]:
    """Top-k accuracies in percent: ``{'accuracy/top1': ..., 'accuracy/top5': ...}``.

    Args:
        scores: ``[N, C]`` class scores (probabilities).
        gt_labels: ``[N]`` true classes.
        topk: the k to report; each must be at most ``C``.
        thr: a label only counts when its score is above this.

    Raises:
        ConfigError: a ``k`` larger than the number of classes, or no samples.
    """
    scores = np.asarray(scores, np.float32)
    gt_labels = np.asarray(gt_labels, np.int64)
    if scores.ndim != 2 or len(scores) != len(gt_labels) or not len(scores):
        raise ConfigError(f'accuracy needs [N, C] scores for N labels, got {scores.shape}')
    num_classes = scores.shape[1]
    if max(topk) > num_classes:
        raise ConfigError(
            f'top-{max(topk)} accuracy needs at least {max(topk)} classes; the model has '
            f'{num_classes} (set the head topk accordingly)'
        )
    labels = topk_labels(scores, max(topk))
    top_scores = np.take_along_axis(scores, labels, axis=1)
    correct = (labels == gt_labels[:, None]) & (top_scores > thr)
    return {f'accuracy/top{k}': 100.0 * float(correct[:, :k].any(axis=1).mean()) for k in topk}


def write_pseudo_labels(
    filenames: Sequence[str], scores: np.ndarray, img_prefix: str | Path, out_file: str | Path
) -> Path:
    """An annotation file (``path label`` per line, paths relative to ``img_prefix``) whose
    labels are the top-1 classes of a reference run: the reference then scores 100% top-1 and
    every other backend loses accuracy for each image it classifies differently."""
    labels = topk_labels(scores, 1)[:, 0]
    root = Path(img_prefix)
    lines = []
    for name, label in zip(filenames, labels):
        path = Path(name)
        try:
            path = path.relative_to(root)
        except ValueError:
            path = path.resolve().relative_to(root.resolve())
        lines.append(f'{path.as_posix()} {int(label)}')
    return write_atomic(out_file, '\n'.join(lines) + '\n')
