"""Draw detections on an image (boxes, class names, scores, masks) with OpenCV.

Pictures are for people checking a model, so they favour legibility: masks are tinted (alpha 0.4)
with a contour so colours stay recognisable; labels are placed where they do not cover each
other; a box lying inside a better one of its class (a part-detection of the same object) is not
drawn; a legend says what is shown (the score threshold, how many detections passed it, how many
part-detections were folded).
"""

import colorsys
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError
from .fileio import write_atomic
from .structures import DetectionResult

MASK_ALPHA = 0.4
#: a box lying this much (intersection over its own area) inside a better-scoring drawn box of
#: the same class is a part-detection of the same object: folded, and counted in the legend
DUPLICATE_COVER = 0.8
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct BGR colours, one per class (evenly spaced hues)."""
    colours = []
    for i in range(max(num_classes, 1)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.61803) % 1.0, 0.85, 0.95)
        colours.append((int(b * 255), int(g * 255), int(r * 255)))
    return colours


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(
        boxes[..., 3] - boxes[..., 1], 0, None
    )


def _covered(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The fraction of one ``[4]`` box lying inside each of ``[N, 4]`` boxes."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / np.maximum(_area(box), 1e-9)


def select_for_drawing(result: DetectionResult, score_thr: float) -> tuple[np.ndarray, int]:
    """Indices of the detections to draw (best first) and how many duplicates were folded."""
    order = np.argsort(-result.scores, kind='stable')
    order = order[result.scores[order] > score_thr]
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if result.labels[k] == result.labels[i]]
        if same and _covered(result.boxes[i], result.boxes[same]).max() > DUPLICATE_COVER:
            continue
        kept.append(int(i))
    return np.asarray(kept, np.int64), len(order) - len(kept)


def _decode_masks(result: DetectionResult, keep: np.ndarray) -> list[np.ndarray] | None:
    if result.masks is None or not len(keep):
        return None
    if isinstance(result.masks, list):
        from pycocotools import mask as mask_utils

        return [mask_utils.decode(result.masks[i]).astype(bool) for i in keep]
    return [np.asarray(result.masks[i], bool) for i in keep]


def place_label(box, size, taken: list, height: int, width: int) -> tuple[int, int]:
    """Top-left corner for a ``size = (w, h)`` label attached to ``box``: on its top edge (above,
    then inside), then inside its bottom edge, left- then right-aligned; the first spot that
    overlaps no label placed so far, else above the box. A tag is never moved away from its box:
    one that lands on another object reads as that object's."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    w, h = size
    # the last spot, above the box again, is where a tag goes when every spot is taken
    spots = [(x, y) for y in (y1 - h, y1, y2 - h) for x in (x1, x2 - w)] + [(x1, y1 - h)]
    for x, y in spots:
        x = min(max(x, 0), max(width - w, 0))
        y = min(max(y, 0), max(height - h, 0))
        rect = (x, y, x + w, y + h)
        free = all(
            rect[2] <= t[0] or rect[0] >= t[2] or rect[3] <= t[1] or rect[1] >= t[3] for t in taken
        )
        if free:
            break
    taken.append(rect)
    return rect[0], rect[1]


def draw_detections(
    image: np.ndarray, result: DetectionResult, class_names=None, score_thr: float = 0.3
) -> np.ndarray:
    """A copy of the BGR ``image`` with the detections above ``score_thr`` drawn on it."""
    canvas = image.copy()
    height, width = canvas.shape[:2]
    num_classes = len(class_names) if class_names else int(result.labels.max(initial=0)) + 1
    colours = palette(num_classes)
    keep, folded = select_for_drawing(result, score_thr)
    masks = _decode_masks(result, keep)
    thickness = max(1, round((height + width) / 600))
    if masks is not None:
        for i, mask in zip(keep[::-1], masks[::-1]):  # best last, on top
            colour = np.array(colours[int(result.labels[i]) % len(colours)], np.float32)
            canvas[mask] = ((1 - MASK_ALPHA) * canvas[mask] + MASK_ALPHA * colour).astype(np.uint8)
            contours, _ = cv2.findContours(
                mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in colour), thickness)
    for i in keep[::-1]:
        x1, y1, x2, y2 = (int(round(v)) for v in result.boxes[i])
        colour = colours[int(result.labels[i]) % len(colours)]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
    scale = 0.4 if min(height, width) < 400 else 0.5
    taken: list = []
    for i in keep:  # best first: the best detections get the best label spots
        label = int(result.labels[i])
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        text = f'{name} {result.scores[i]:.2f}'
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
        size = (tw + 4, th + base + 3)
        x, y = place_label(result.boxes[i], size, taken, height, width)
        colour = colours[label % len(colours)]
        cv2.rectangle(canvas, (x, y), (x + size[0], y + size[1]), colour, -1)
        cv2.putText(canvas, text, (x + 2, y + th + 1), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    legend = [f'score > {score_thr:.2f}: {len(keep)} of {len(result)} detections']
    if folded:
        legend.append(f'{folded} inside a better box of their class not drawn')
    _draw_legend(canvas, legend, scale)
    return canvas


def _draw_legend(canvas: np.ndarray, lines: list[str], scale: float) -> None:
    """Lines of white text on a darkened strip at the bottom left (one line if it fits)."""
    width = canvas.shape[1]
    one = ', '.join(lines)
    if cv2.getTextSize(one, _FONT, scale, 1)[0][0] + 8 <= width:
        lines = [one]
    sizes = [cv2.getTextSize(line, _FONT, scale, 1) for line in lines]
    step = max(th + base for (_, th), base in sizes) + 3
    top = canvas.shape[0] - step * len(lines) - 3
    strip = canvas[max(top, 0) :, : min(max(tw for (tw, _), _ in sizes) + 8, width)]
    strip[:] = (0.35 * strip).astype(np.uint8)
    for k, (line, ((_, th), _)) in enumerate(zip(lines, sizes)):
        y = top + step * k + th + 3
        cv2.putText(canvas, line, (4, y), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write an image atomically (temporary name, then rename)."""
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix or '.png', image)
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError(f'cannot write {path}: OpenCV cannot encode {path.suffix!r} images')
    write_atomic(path, encoded.tobytes())
