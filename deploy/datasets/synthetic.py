"""A deterministic COCO-format data set of coloured shapes: the data of every test, demo and CI job.

Images have varied sizes and aspect ratios, textured backgrounds, and 1-8 objects of six classes
at scales from small to large. Later objects are drawn over earlier ones; each object's mask, box
and area describe what stays visible. The layout mirrors COCO (``annotations/instances_*.json``,
``train2017/``, ``val2017/``) so a real COCO root can be swapped in. Masks are polygons, or RLE
where a mask has holes.
"""
import json
import os
from pathlib import Path

import cv2
import numpy as np

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
CLASS_COLOURS = ((40, 40, 220), (40, 200, 40), (220, 60, 40), (30, 200, 230), (200, 40, 200),
                 (230, 200, 40))
MIN_VISIBLE_AREA = 80
MIN_VISIBLE_FRACTION = 0.25


def _background(gen: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth colour gradient with noise and a few faint lines: texture without objects."""
    c0, c1 = gen.integers(60, 200, 3), gen.integers(60, 200, 3)
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    if gen.random() < 0.5:
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    image = (c0 * (1 - t) + c1 * t) * np.ones((h, w, 1), np.float32)
    image += gen.normal(0, 8, (h, w, 3)).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(gen.integers(0, 4))):
        p1 = (int(gen.integers(0, w)), int(gen.integers(0, h)))
        p2 = (int(gen.integers(0, w)), int(gen.integers(0, h)))
        shade = tuple(int(v) for v in gen.integers(40, 220, 3))
        cv2.line(image, p1, p2, shade, int(gen.integers(1, 3)), cv2.LINE_AA)
    return image


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Outline points of a polygonal shape of radius ``r`` rotated by ``angle``."""
    if kind == 'square':
        pts = [(np.cos(a), np.sin(a)) for a in np.pi / 4 + np.arange(4) * np.pi / 2]
    elif kind == 'triangle':
        pts = [(np.cos(a), np.sin(a)) for a in -np.pi / 2 + np.arange(3) * 2 * np.pi / 3]
    elif kind == 'star':
        pts = [((1.0 if i % 2 == 0 else 0.45) * np.cos(a), (1.0 if i % 2 == 0 else 0.45)
                * np.sin(a)) for i, a in enumerate(-np.pi / 2 + np.arange(10) * np.pi / 5)]
    else:  # cross
        a, b = 1.0, 0.33
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b),
               (-a, b), (-a, -b), (-b, -b)]
    pts = np.asarray(pts, np.float64)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (pts @ rot.T * r + [cx, cy]).round().astype(np.int32)


def _draw_object(canvas: np.ndarray, mask: np.ndarray, kind: str, cx, cy, r, angle, colour):
    """Draw one object on ``canvas`` and its full (unoccluded) silhouette into ``mask``."""
    if kind == 'circle':
        cv2.ellipse(mask, (int(cx), int(cy)), (int(r), int(r * 0.9)), np.degrees(angle), 0, 360,
                    1, -1)
    elif kind == 'ring':
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
        cv2.circle(mask, (int(cx), int(cy)), int(r * 0.55), 0, -1)
    else:
        cv2.fillPoly(mask, [_shape_polygon(kind, cx, cy, r, angle)], 1)
    canvas[mask.astype(bool)] = np.asarray(colour, np.uint8)


def render_image(gen: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """One image and its visible objects (``category_id``, ``mask``) with occlusion resolved."""
    short = int(gen.integers(240, 481))
    aspect = float(np.exp(gen.uniform(np.log(0.5), np.log(2.0))))
    h, w = (short, int(short * aspect)) if aspect >= 1 else (int(short / aspect), short)
    image = _background(gen, h, w)
    owner = np.full((h, w), -1, np.int32)  # index of the object that owns each pixel
    objects = []
    for k in range(int(gen.integers(1, 9))):
        label = int(gen.integers(0, len(CATEGORIES)))
        r = float(np.exp(gen.uniform(np.log(0.05), np.log(0.35))) * min(h, w))
        cx, cy = gen.uniform(r * 0.5, w - r * 0.5), gen.uniform(r * 0.5, h - r * 0.5)
        angle = float(gen.uniform(0, 2 * np.pi))
        colour = np.clip(np.asarray(CLASS_COLOURS[label]) * gen.uniform(0.75, 1.25), 0, 255)
        silhouette = np.zeros((h, w), np.uint8)
        _draw_object(image, silhouette, CATEGORIES[label]['name'], cx, cy, r, angle, colour)
        owner[silhouette.astype(bool)] = k
        objects.append(dict(label=label, full_area=int(silhouette.sum())))
    visible = []
    for k, obj in enumerate(objects):
        mask = owner == k
        area = int(mask.sum())
        if area < MIN_VISIBLE_AREA or area < MIN_VISIBLE_FRACTION * obj['full_area']:
            continue
        visible.append(dict(category_id=CATEGORIES[obj['label']]['id'], mask=mask))
    return image, visible


def mask_to_annotation(mask: np.ndarray) -> dict | None:
    """COCO ``segmentation``, ``bbox`` [x, y, w, h] and ``area`` of a bool mask.

    Polygons where the mask has no holes; a compressed RLE where it has (a ring, or an object with
    a smaller one drawn on top of it), because polygons cannot subtract.
    """
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP,
                                           cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    has_holes = bool((hierarchy[0][:, 3] >= 0).any())
    if has_holes:
        from pycocotools import mask as mask_utils
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        segmentation = dict(size=[int(v) for v in rle['size']], counts=rle['counts'].decode())
    else:
        segmentation = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
        if not segmentation:
            return None
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return dict(segmentation=segmentation, bbox=[float(x1), float(y1), float(x2 - x1),
                                                 float(y2 - y1)], area=float(mask.sum()),
                iscrowd=0)


def _write_split(root: Path, split: str, num_images: int, seed: int, first_id: int) -> Path:
    gen = np.random.default_rng(seed)
    img_dir = root / f'{split}2017'
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image, objects = render_image(gen)
        img_id = first_id + i
        name = f'{img_id:012d}.jpg'
        ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok
        (img_dir / name).write_bytes(data.tobytes())
        images.append(dict(id=img_id, file_name=name, height=image.shape[0],
                           width=image.shape[1]))
        for obj in objects:
            ann = mask_to_annotation(obj['mask'])
            if ann is not None:
                annotations.append(dict(ann, id=len(annotations) + 1, image_id=img_id,
                                        category_id=obj['category_id']))
    ann_file = root / 'annotations' / f'instances_{split}2017.json'
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(info=dict(description='detdeploy synthetic shapes', version='1.0'),
                   images=images, annotations=annotations, categories=list(CATEGORIES))
    tmp = ann_file.with_name(ann_file.name + '.tmp')
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, ann_file)
    return ann_file


def generate_synthetic_coco(out_dir: str | Path, num_train: int = 400, num_val: int = 50,
                            seed: int = 0) -> dict:
    """Write the train and val splits; the same arguments always give the same bytes.

    Returns:
        ``dict(train=ann_file, val=ann_file, root=out_dir)``.
    """
    root = Path(out_dir)
    train = _write_split(root, 'train', num_train, seed, first_id=1)
    val = _write_split(root, 'val', num_val, seed + 1, first_id=100000)
    return dict(train=train, val=val, root=root)


def render_sample_image(path: str | Path, seed: int = 2024) -> Path:
    """A single sample image (for the demo) drawn from the same distribution."""
    image, _ = render_image(np.random.default_rng(seed))
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or '.jpg', image)
    assert ok
    path.write_bytes(data.tobytes())
    return path
