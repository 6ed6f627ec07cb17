"""Export parity: the ONNX inputs of a batch, and mask differences over matched detections."""

import numpy as np


def inputs_of(img, metas) -> dict:
    return dict(
        input=img.numpy(), img_shape=np.asarray([m['img_shape'] for m in metas], np.float32)
    )


def matched_mask_error(ref: dict, test: dict) -> float:
    """Max |mask prob| difference over detections paired by label and box (same row set)."""
    worst = 0.0
    for i in range(len(ref['labels'])):
        for j in np.nonzero(ref['labels'][i] >= 0)[0]:
            same = test['labels'][i] == ref['labels'][i][j]
            dist = np.abs(test['dets'][i][:, :4] - ref['dets'][i][j, :4]).max(1)
            k = int(np.argmin(np.where(same, dist, np.inf)))
            worst = max(worst, float(np.abs(test['masks'][i][k] - ref['masks'][i][j]).max()))
    return worst
