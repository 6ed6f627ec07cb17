"""Backend outputs -> :class:`DetectionResult` in original-image coordinates (all backends)."""

import numpy as np

from .structures import DetectionResult


def outputs_to_results(
    outputs: dict[str, np.ndarray], img_metas: list[dict], score_thr: float = 0.0
) -> list[DetectionResult]:
    """Drop padding rows and map boxes back to each original image.

    Args:
        outputs: ``dets [B, K, 5]``, ``labels [B, K]`` in network-input coordinates; padding rows
            have label -1.
        img_metas: the pipeline metas of the batch (``scale_factor`` is used).
        score_thr: also drop rows with ``score <= score_thr`` (0 keeps every real detection).

    Returns:
        One :class:`DetectionResult` per image.
    """
    results = []
    for i, meta in enumerate(img_metas):
        dets, labels = outputs['dets'][i], outputs['labels'][i]
        keep = (labels >= 0) & (dets[:, 4] > score_thr)
        scale = np.asarray(meta.get('scale_factor', np.ones(4)), np.float32).reshape(-1)
        if scale.size == 2:  # MMDetection 3.x style (w, h)
            scale = np.tile(scale, 2)
        boxes = dets[keep, :4] / scale
        results.append(
            DetectionResult(
                boxes=boxes.astype(np.float32),
                scores=dets[keep, 4].astype(np.float32),
                labels=labels[keep].astype(np.int64),
            )
        )
    return results
