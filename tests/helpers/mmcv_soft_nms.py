"""MMCV's soft-NMS CPU kernel transcribed statement by statement: the reference the soft-NMS
tests (and CornerNet's decoding) compare against."""

import numpy as np

F32 = np.float32


def mmcv_soft_nms(boxes, scores, iou_threshold, sigma, min_score, method):
    """MMCV's ``softnms_cpu``, statement by statement, in float32: ``(picked scores, indices)``."""
    x1, y1, x2, y2 = ([F32(b[k]) for b in boxes] for k in range(4))
    sc = [F32(s) for s in scores]
    areas = [F32((x2[i] - x1[i]) * (y2[i] - y1[i])) for i in range(len(sc))]
    inds = list(range(len(sc)))
    picked, n, i = [], len(sc), 0
    arrays = (x1, y1, x2, y2, sc, areas, inds)
    while i < n:
        max_pos = i
        for pos in range(i + 1, n):
            if sc[max_pos] < sc[pos]:
                max_pos = pos
        for a in arrays:
            a[i], a[max_pos] = a[max_pos], a[i]
        picked.append(sc[i])
        pos = i + 1
        while pos < n:
            w = max(F32(0), F32(min(x2[i], x2[pos]) - max(x1[i], x1[pos])))
            h = max(F32(0), F32(min(y2[i], y2[pos]) - max(y1[i], y1[pos])))
            inter = F32(w * h)
            ovr = F32(inter / F32(F32(areas[i] + areas[pos]) - inter))
            weight = F32(1)
            if method == 'naive' and ovr >= F32(iou_threshold):
                weight = F32(0)
            elif method == 'linear' and ovr >= F32(iou_threshold):
                weight = F32(1 - ovr)
            elif method == 'gaussian':
                weight = np.exp(F32(-F32(ovr * ovr) / F32(sigma)))
            sc[pos] = F32(sc[pos] * weight)
            if sc[pos] < F32(min_score):
                for a in arrays:
                    a[pos] = a[n - 1]
                n -= 1
                pos -= 1
            pos += 1
        i += 1
    return np.array(picked, F32), np.array(inds[:n], np.int64)


def mmcv_batched_soft_nms(boxes, scores, labels, **kwargs):
    """MMCV's ``batched_nms`` with ``soft_nms``: classes apart by coordinate offsets."""
    if len(scores) == 0:
        return np.zeros(0, F32), np.zeros(0, np.int64)
    offsets = labels.astype(F32) * (boxes.max() + F32(1))
    return mmcv_soft_nms(boxes + offsets[:, None], scores, **kwargs)
