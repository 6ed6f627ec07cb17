"""A deterministic classification set cut from the synthetic shapes: the data of the classifier's
tests, its bundled model and CI.

Images are drawn by :func:`deploy.datasets.synthetic.render_image` (textured backgrounds, six
shape classes, occlusion); every object with at least :data:`MIN_VISIBLE_FRACTION` of itself
visible gives one crop: a square around its box with some context (neighbours included), clipped
to the image. Each crop's hues are rotated by a random angle, so that colour (a strong cue of the
class in the detection set) says nothing here and the classifier has to learn shapes. The layout
is ImageNet's, readable both ways MMPretrain reads it::

    OUT/train/circle/000000.jpg ...   OUT/meta/train.txt   (``circle/000000.jpg 0`` per line)
    OUT/val/square/000017.jpg ...     OUT/meta/val.txt
    OUT/meta/classes.txt              (one class name per line, in label order)

The same arguments always give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..fileio import write_atomic
from .synthetic import CATEGORIES, JPEG_QUALITY, render_image

#: class names in label order: the categories of the detection set, sorted by name, so that the
#: label order of the annotation files is also that of the sorted class folders
CLASS_NAMES = tuple(sorted(c['name'] for c in CATEGORIES))
#: objects less visible than this (of their unoccluded area) are not cut out
MIN_VISIBLE_FRACTION = 0.6
#: crop side = CONTEXT x the longer side of the object's box (at least MIN_CROP_SIDE pixels)
CONTEXT = 1.3
MIN_CROP_SIDE = 24


def crop_objects(image: np.ndarray, objects: list[dict]) -> list[tuple[np.ndarray, int]]:
    """``(crop, label)`` for every well-visible object of a rendered image.

    Args:
        image: ``HxWx3`` uint8 BGR, from :func:`render_image`.
        objects: its objects (``category_id``, ``mask``, ``full_area``).

    Returns:
        Crops (``hxwx3`` uint8, square unless clipped by the image border) with the object's
        label, an index into :data:`CLASS_NAMES`.
    """
    height, width = image.shape[:2]
    label_of = {c['id']: CLASS_NAMES.index(c['name']) for c in CATEGORIES}
    crops = []
    for obj in objects:
        mask = obj['mask']
        if mask.sum() < MIN_VISIBLE_FRACTION * obj['full_area']:
            continue
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        side = max(MIN_CROP_SIDE, int(round(max(w, h) * CONTEXT)))
        x0 = int(np.clip(round(x + w / 2 - side / 2), 0, max(0, width - side)))
        y0 = int(np.clip(round(y + h / 2 - side / 2), 0, max(0, height - side)))
        crop = image[y0 : y0 + side, x0 : x0 + side]
        crops.append((np.ascontiguousarray(crop), label_of[obj['category_id']]))
    return crops


def rotate_hue(image: np.ndarray, shift: int) -> np.ndarray:
    """The BGR ``image`` with every hue turned by ``shift`` (OpenCV hue units, 0-179)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _encode_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError('OpenCV failed to encode a JPEG image')
    return data.tobytes()


def _write_split(root: Path, split: str, num_images: int, seed: int) -> Path:
    gen = np.random.default_rng(seed)
    for name in CLASS_NAMES:  # every class has its folder, even an empty one
        (root / split / name).mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    while len(lines) < num_images:
        image, objects = render_image(gen)
        for crop, label in crop_objects(image, objects):
            if len(lines) == num_images:
                break
            relative = f'{CLASS_NAMES[label]}/{len(lines):06d}.jpg'
            crop = rotate_hue(crop, int(gen.integers(0, 180)))
            (root / split / relative).write_bytes(_encode_jpeg(crop))
            lines.append(f'{relative} {label}')
    return write_atomic(root / 'meta' / f'{split}.txt', ''.join(f'{line}\n' for line in lines))


def generate_synthetic_classification(
    out_dir: str | Path, num_train: int = 3000, num_val: int = 300, seed: int = 0
) -> dict:
    """Write the train and val splits under ``out_dir``; the same arguments give the same bytes.

    Returns:
        ``dict(root, train, val, train_img_prefix, val_img_prefix, classes)``: the annotation
        files, image folders and class-name file, all ``Path``.
    """
    root = Path(out_dir)
    train = _write_split(root, 'train', num_train, seed)
    val = _write_split(root, 'val', num_val, seed + 1)
    classes = write_atomic(root / 'meta' / 'classes.txt', ''.join(f'{n}\n' for n in CLASS_NAMES))
    return dict(
        root=root,
        train=train,
        val=val,
        train_img_prefix=root / 'train',
        val_img_prefix=root / 'val',
        classes=classes,
    )
