"""Draw detections on an image (boxes, class names, scores, masks) with OpenCV."""

import colorsys
from pathlib import Path

import cv2
import numpy as np

from .fileio import write_atomic
from .structures import DetectionResult


def palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct BGR colours, one per class (evenly spaced hues)."""
    colours = []
    for i in range(max(num_classes, 1)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.61803) % 1.0, 0.85, 0.95)
        colours.append((int(b * 255), int(g * 255), int(r * 255)))
    return colours


def draw_detections(
    image: np.ndarray, result: DetectionResult, class_names=None, score_thr: float = 0.3
) -> np.ndarray:
    """A copy of the BGR ``image`` with the detections above ``score_thr`` drawn on it."""
    canvas = image.copy()
    num_classes = len(class_names) if class_names else int(result.labels.max(initial=0)) + 1
    colours = palette(num_classes)
    keep = np.nonzero(result.scores > score_thr)[0]
    masks = result.masks
    if masks is not None and len(keep):
        if isinstance(masks, list):
            from pycocotools import mask as mask_utils

            masks = [mask_utils.decode(masks[i]).astype(bool) for i in keep]
        else:
            masks = [masks[i] for i in keep]
        for i, mask in zip(keep, masks):
            colour = np.array(colours[int(result.labels[i]) % len(colours)], np.float32)
            canvas[mask] = (0.5 * canvas[mask] + 0.5 * colour).astype(np.uint8)
    thickness = max(1, round(sum(image.shape[:2]) / 600))
    for i in keep[np.argsort(result.scores[keep])]:  # best drawn last, on top
        x1, y1, x2, y2 = (int(round(v)) for v in result.boxes[i])
        label = int(result.labels[i])
        colour = colours[label % len(colours)]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        text = f'{name} {result.scores[i]:.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        top = max(y1 - th - base - 2, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(
            canvas,
            text,
            (x1 + 2, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return canvas


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write an image atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix or '.png', image)
    if not ok:
        raise ValueError(f'cannot encode image as {path.suffix}')
    write_atomic(path, encoded.tobytes())
