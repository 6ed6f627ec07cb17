"""A deterministic COCO-format data set of coloured shapes: the data of every test, demo and CI job.

Images have varied sizes (short side 240-480 px) and aspect ratios (0.5-2), textured backgrounds,
and 1-8 objects of six classes at scales from small to large. Later objects are drawn over earlier
ones; each object's mask, box, area and polygons describe only what stays visible, and objects
left with too little of themselves are dropped. The layout mirrors COCO::

    OUT/annotations/instances_train2017.json   OUT/train2017/000000000001.jpg ...
    OUT/annotations/instances_val2017.json     OUT/val2017/000000100000.jpg ...

so a real COCO root can be swapped in. The same arguments always give the same bytes.
"""

import json
from pathlib import Path

import cv2
import numpy as np

from ..fileio import write_atomic

#: COCO-style categories; ids are deliberately not contiguous (exercises the label -> id mapping)
CATEGORIES = (
    dict(id=1, name='circle', supercategory='shape'),
    dict(id=2, name='square', supercategory='shape'),
    dict(id=4, name='triangle', supercategory='shape'),
    dict(id=5, name='star', supercategory='shape'),
    dict(id=7, name='ring', supercategory='shape'),
    dict(id=9, name='cross', supercategory='shape'),
)
#: a base BGR colour per class; each object jitters it, so colour alone is a strong but not
#: perfect cue
CLASS_COLOURS = (
    (40, 40, 220),
    (40, 200, 40),
    (220, 60, 40),
    (30, 200, 230),
    (200, 40, 200),
    (230, 200, 40),
)
#: objects with fewer visible pixels, or less than this fraction of themselves visible, are dropped
MIN_VISIBLE_AREA = 80
MIN_VISIBLE_FRACTION = 0.25
JPEG_QUALITY = 92


def _background(gen: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A colour gradient with Gaussian noise and a few faint lines: texture without objects."""
    c0, c1 = gen.integers(60, 200, 3), gen.integers(60, 200, 3)
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    if gen.random() < 0.5:
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    gradient = c0 * (1 - t) + c1 * t  # float64, [1, w, 3] or [h, 1, 3]
    image = gen.normal(0, 8, (h, w, 3)).astype(np.float32).astype(np.float64)
    image += gradient
    image = np.clip(image, 0, 255, out=image).astype(np.uint8)
    for _ in range(int(gen.integers(0, 4))):
        p1 = (int(gen.integers(0, w)), int(gen.integers(0, h)))
        p2 = (int(gen.integers(0, w)), int(gen.integers(0, h)))
        shade = tuple(int(v) for v in gen.integers(40, 220, 3))
        cv2.line(image, p1, p2, shade, int(gen.integers(1, 3)), cv2.LINE_AA)
    return image


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """``[K, 2]`` int32 outline of a polygonal shape of radius ``r`` rotated by ``angle``."""
    if kind == 'square':
        pts = [(np.cos(a), np.sin(a)) for a in np.pi / 4 + np.arange(4) * np.pi / 2]
    elif kind == 'triangle':
        pts = [(np.cos(a), np.sin(a)) for a in -np.pi / 2 + np.arange(3) * 2 * np.pi / 3]
    elif kind == 'star':
        radii = [1.0 if i % 2 == 0 else 0.45 for i in range(10)]
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        pts = [(q * np.cos(a), q * np.sin(a)) for q, a in zip(radii, angles)]
    else:  # cross
        a, b = 1.0, 0.33
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b),
               (-a, b), (-a, -b), (-b, -b)]  # fmt: skip
    pts = np.asarray(pts, np.float64)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (pts @ rot.T * r + [cx, cy]).round().astype(np.int32)


def _draw_silhouette(mask: np.ndarray, kind: str, cx: float, cy: float, r: float, angle: float):
    """Fill the full (unoccluded) silhouette of one object into the uint8 ``mask`` with 1."""
    if kind == 'circle':
        axes = (int(r), int(r * 0.9))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, np.degrees(angle), 0, 360, 1, -1)
    elif kind == 'ring':
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
        cv2.circle(mask, (int(cx), int(cy)), int(r * 0.55), 0, -1)
    else:
        cv2.fillPoly(mask, [_shape_polygon(kind, cx, cy, r, angle)], 1)


def render_image(gen: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """Draw one image from ``gen``.

    Returns:
        ``(image, objects)``: ``image`` is ``HxWx3`` uint8 BGR; ``objects`` lists the kept objects
        in drawing order as dicts with ``category_id``, ``mask`` (``[H, W]`` bool, the visible
        pixels) and ``full_area`` (pixels of the object before occlusion).
    """
    short = int(gen.integers(240, 481))
    aspect = float(np.exp(gen.uniform(np.log(0.5), np.log(2.0))))
    h, w = (short, int(short * aspect)) if aspect >= 1 else (int(short / aspect), short)
    image = _background(gen, h, w)
    owner = np.full((h, w), -1, np.int32)  # index of the object that owns (shows in) each pixel
    drawn = []
    silhouette = np.zeros((h, w), np.uint8)
    for k in range(int(gen.integers(1, 9))):
        label = int(gen.integers(0, len(CATEGORIES)))
        r = float(np.exp(gen.uniform(np.log(0.05), np.log(0.35))) * min(h, w))
        cx, cy = gen.uniform(r * 0.5, w - r * 0.5), gen.uniform(r * 0.5, h - r * 0.5)
        angle = float(gen.uniform(0, 2 * np.pi))
        colour = np.clip(np.asarray(CLASS_COLOURS[label]) * gen.uniform(0.75, 1.25), 0, 255)
        silhouette.fill(0)
        _draw_silhouette(silhouette, CATEGORIES[label]['name'], cx, cy, r, angle)
        x, y, bw, bh = cv2.boundingRect(silhouette)
        if bw == 0:
            continue
        roi = (slice(y, y + bh), slice(x, x + bw))
        inside = silhouette[roi].astype(bool)
        image[roi][inside] = colour.astype(np.uint8)
        owner[roi][inside] = k
        drawn.append((k, label, roi, int(inside.sum())))
    objects = []
    for k, label, roi, full_area in drawn:
        visible = owner[roi] == k
        area = int(visible.sum())
        if area < MIN_VISIBLE_AREA or area < MIN_VISIBLE_FRACTION * full_area:
            continue
        mask = np.zeros((h, w), bool)
        mask[roi] = visible
        objects.append(dict(category_id=CATEGORIES[label]['id'], mask=mask, full_area=full_area))
    return image, objects


def _offset_polygon(points: np.ndarray, distance: float) -> np.ndarray:
    """Move every edge of a closed polygon ``distance`` outwards (negative: inwards).

    Convex corners sharper than 120 degrees get a square cap (two points) instead of a long
    miter, so one-pixel-wide spurs keep their width.
    """
    p = points.astype(np.float64)
    t_in = p - np.roll(p, 1, axis=0)
    t_out = np.roll(p, -1, axis=0) - p
    t_in /= np.maximum(np.linalg.norm(t_in, axis=1, keepdims=True), 1e-9)
    t_out /= np.maximum(np.linalg.norm(t_out, axis=1, keepdims=True), 1e-9)
    twice_area = np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1])
    side = 1.0 if twice_area > 0 else -1.0  # the interior lies left of the edges when positive
    n_in = side * np.stack([t_in[:, 1], -t_in[:, 0]], axis=1)  # outward unit normals
    n_out = side * np.stack([t_out[:, 1], -t_out[:, 0]], axis=1)
    cos = np.sum(n_in * n_out, axis=1)
    turn = t_in[:, 0] * t_out[:, 1] - t_in[:, 1] * t_out[:, 0]
    gap_side = side * turn * distance > 0  # the offset opens a gap at this corner
    out = []
    for i in range(len(p)):
        if cos[i] < -0.5 and gap_side[i]:
            out.append(p[i] + distance * n_in[i] + abs(distance) * t_in[i])
            out.append(p[i] + distance * n_out[i] - abs(distance) * t_out[i])
        else:
            out.append(p[i] + distance * (n_in[i] + n_out[i]) / max(1.0 + cos[i], 0.5))
    return np.asarray(out)


def _join_hole(polygon: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Splice ``hole`` into ``polygon`` through a zero-width cut between their closest points.

    COCO rasterises polygons with the even-odd rule, so the result leaves the hole empty.
    """
    dist = np.sum((polygon[:, None, :] - hole[None, :, :]) ** 2, axis=2)
    i, j = np.unravel_index(int(np.argmin(dist)), dist.shape)
    return np.concatenate([polygon[: i + 1], hole[j:], hole[: j + 1], polygon[i:]])


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` that rasterise back to ``mask``.

    OpenCV traces contours through boundary pixel centres; COCO polygons live in continuous
    coordinates where pixel ``(x, y)`` covers ``[x, x + 1] x [y, y + 1]``. Each contour is
    shifted to pixel centres and moved half a pixel away from the object, and holes (from a ring,
    or an object drawn inside another) are spliced into their outer polygon.
    """
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if not contours:
        return []
    hierarchy = hierarchy[0]
    polygons = []
    for index, contour in enumerate(contours):
        if hierarchy[index][3] != -1:
            continue  # a hole: joined to its outer contour below
        pts = contour.reshape(-1, 2).astype(np.float64) + 0.5
        if len(pts) < 3:  # a one- or two-pixel sliver: its bounding rectangle
            (x1, y1), (x2, y2) = pts.min(0) - 0.5, pts.max(0) + 0.5
            polygon = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
        else:
            polygon = _offset_polygon(pts, 0.5)
        child = hierarchy[index][2]
        while child != -1:
            hole = contours[child].reshape(-1, 2).astype(np.float64) + 0.5
            if len(hole) >= 3:
                polygon = _join_hole(polygon, _offset_polygon(hole, -0.5))
            child = hierarchy[child][0]
        polygons.append([round(float(v), 2) for v in polygon.reshape(-1)])
    return polygons


def mask_to_annotation(mask: np.ndarray) -> dict | None:
    """COCO ``segmentation`` (polygons), ``bbox`` ``[x, y, w, h]``, ``area`` (mask pixels) and
    ``iscrowd`` of a bool mask; None for an empty mask."""
    polygons = mask_to_polygons(mask)
    if not polygons:
        return None
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return dict(
        segmentation=polygons,
        bbox=[float(x), float(y), float(w), float(h)],
        area=float(np.count_nonzero(mask)),
        iscrowd=0,
    )


def _encode_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError('OpenCV failed to encode a JPEG image')
    return data.tobytes()


def _write_split(root: Path, split: str, num_images: int, seed: int, first_id: int) -> Path:
    gen = np.random.default_rng(seed)
    img_dir = root / f'{split}2017'
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image, objects = render_image(gen)
        img_id = first_id + i
        name = f'{img_id:012d}.jpg'
        (img_dir / name).write_bytes(_encode_jpeg(image))
        images.append(dict(id=img_id, file_name=name, height=image.shape[0], width=image.shape[1]))
        for obj in objects:
            ann = mask_to_annotation(obj['mask'])
            if ann is not None:
                annotations.append(
                    dict(
                        ann,
                        id=len(annotations) + 1,
                        image_id=img_id,
                        category_id=obj['category_id'],
                    )
                )
    ann_file = root / 'annotations' / f'instances_{split}2017.json'
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(
        info=dict(description='detdeploy synthetic shapes', version='1.0'),
        images=images,
        annotations=annotations,
        categories=[dict(c) for c in CATEGORIES],
    )
    write_atomic(ann_file, json.dumps(payload).encode())
    return ann_file


def generate_synthetic_coco(
    out_dir: str | Path, num_train: int = 400, num_val: int = 50, seed: int = 0
) -> dict:
    """Write the train and val splits under ``out_dir``; the same arguments give the same bytes.

    Train image ids start at 1, val ids at 100000 (the splits never share an id).

    Returns:
        ``dict(root=out_dir, train=train_ann_file, val=val_ann_file, train_img_prefix=...,
        val_img_prefix=...)``, all ``Path``.
    """
    root = Path(out_dir)
    train = _write_split(root, 'train', num_train, seed, first_id=1)
    val = _write_split(root, 'val', num_val, seed + 1, first_id=100000)
    return dict(
        root=root,
        train=train,
        val=val,
        train_img_prefix=root / 'train2017',
        val_img_prefix=root / 'val2017',
    )


def render_sample_image(path: str | Path, seed: int = 2024) -> Path:
    """Write one image from the same distribution (for demos); the format follows the suffix."""
    image, _ = render_image(np.random.default_rng(seed))
    path = Path(path)
    suffix = path.suffix.lower() or '.jpg'
    if suffix in ('.jpg', '.jpeg'):
        data = _encode_jpeg(image)
    else:
        ok, encoded = cv2.imencode(suffix, image)
        if not ok:
            raise ValueError(f'cannot write a {suffix} image: {path}')
        data = encoded.tobytes()
    return write_atomic(path, data)
