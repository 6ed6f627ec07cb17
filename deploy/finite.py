"""NaN and Inf are never scored: where they can enter a run (checkpoint weights, an engine's
outputs, detections turned into pseudo ground truth) they are found and named in one line.

A non-finite score compares false with every threshold, so one engine silently drops it while
another writes it into ``--out`` and the AP; a NaN weight spreads to every output it touches.
"""

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .errors import BackendError, CheckpointError, DeployError


def _nonfinite_count(values) -> int:
    array = values.detach().cpu().numpy() if hasattr(values, 'detach') else np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def _listing(counts: Sequence[tuple[str, int]], limit: int = 3) -> str:
    shown = ', '.join(f'{name} ({n})' for name, n in counts[:limit])
    return shown + (f' and {len(counts) - limit} more' if len(counts) > limit else '')


def check_weights_finite(state_dict: Mapping, source: str) -> None:
    """Raise :class:`CheckpointError` naming the tensors of ``state_dict`` with NaN or Inf."""
    bad = [
        (k, n) for k, v in state_dict.items() if hasattr(v, 'dtype') and (n := _nonfinite_count(v))
    ]
    if bad:
        raise CheckpointError(
            f'{source}: {len(bad)} weight tensor(s) hold NaN or Inf values: {_listing(bad)}; '
            'a model with them cannot give meaningful detections'
        )


def check_outputs_finite(outputs: Mapping, source: str) -> None:
    """Raise :class:`BackendError` if a detection (a row with a label) of the batch ``outputs``
    has a NaN or Inf box or score, or a mask holds them."""
    labels = np.asarray(outputs['labels']) if 'labels' in outputs else None
    bad = []
    for name in ('dets', 'masks', 'scores'):
        if name not in outputs:
            continue
        values = np.asarray(outputs[name])
        if labels is not None and name in ('dets', 'masks') and values.shape[:2] == labels.shape:
            values = values[labels >= 0]
        if n := _nonfinite_count(values):
            bad.append((name, n))
    if bad:
        raise BackendError(
            f'{source} returned NaN or Inf: {_listing(bad)} value(s); they are never scored '
            '(check the weights the file was exported from, and its precision)'
        )


def check_detections_finite(coco_results: Iterable[dict], source: str) -> None:
    """Raise :class:`DeployError` if a COCO result's ``bbox`` or ``score`` is not finite."""
    bad = []
    for det in coco_results:
        numbers = [*det.get('bbox', ()), det.get('score', 0.0)]
        try:
            finite = all(np.isfinite(float(v)) for v in numbers)
        except (TypeError, ValueError):
            finite = False
        if not finite:
            bad.append(det.get('image_id'))
    if bad:
        raise DeployError(
            f'{source}: {len(bad)} detection(s) have a NaN, Inf or non-numeric bbox or score '
            f'(images {", ".join(str(i) for i in bad[:3])}{", ..." if len(bad) > 3 else ""}): '
            'they cannot be ground truth'
        )
