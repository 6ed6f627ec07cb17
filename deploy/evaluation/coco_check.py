"""What a careful COCO user checks in an annotation file before trusting an AP computed on it.

``pycocotools`` indexes whatever it is given: a duplicate id silently replaces an entry, an
annotation of an image or category that does not exist is never scored, a box without ``area``
or ``segmentation`` fails deep inside the evaluation. :func:`check_coco_annotations` is the one
place these are checked, before any image is run:

* errors (:class:`~deploy.errors.ConfigError`) for what makes the number meaningless: no images,
  colliding ids, annotations that do not resolve to an image or a category, malformed or
  non-finite boxes, missing ``area``, and for ``segm`` annotations without usable segmentation;
* named warnings with counts for what is legal but suspicious (``boxes-without-area``,
  ``boxes-outside-image``, ``crowd-only-images``, ``no-annotations``); each is one line.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import ConfigError


def _duplicates(ids: Iterable) -> list:
    return sorted((i for i, n in Counter(ids).items() if n > 1), key=str)


def _examples(values: Sequence, limit: int = 3) -> str:
    shown = ', '.join(str(v) for v in list(values)[:limit])
    return shown + (', ...' if len(values) > limit else '')


def check_coco_ids(data: dict, name: str) -> None:
    """Raise :class:`ConfigError` for ids used twice or an empty image list (checked before
    anything else reads the file's categories: a duplicate would mislead that too)."""
    for key in ('images', 'categories', 'annotations'):
        dups = _duplicates(item.get('id') for item in data.get(key, []))
        if dups:
            raise ConfigError(
                f'annotation file {name}: {len(dups)} {key} id(s) used more than once '
                f'({_examples(dups)}): entries would silently replace each other'
            )
    if not data.get('images'):
        raise ConfigError(f'annotation file {name} lists no images: there is nothing to score')


def _finite_box(box) -> bool:
    return (
        isinstance(box, (list, tuple))
        and len(box) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        and all(math.isfinite(v) for v in box)
        and box[2] >= 0
        and box[3] >= 0
    )


def _problem(ann: dict, image_ids: set, cat_ids: set) -> str | None:
    """Why one annotation makes the AP meaningless (a short phrase), or None."""
    if not isinstance(ann, dict):
        return 'not an object'
    if ann.get('image_id') not in image_ids:
        return 'an image_id that is not in `images`'
    if ann.get('category_id') not in cat_ids:
        return 'a category_id that is not in `categories`'
    if not _finite_box(ann.get('bbox')):
        return 'no valid bbox ([x, y, w, h], finite, w and h >= 0)'
    area = ann.get('area')
    if not isinstance(area, (int, float)) or isinstance(area, bool) or not math.isfinite(area):
        return 'no finite area'
    return None


def _check_annotations(data: dict, name: str) -> None:
    image_ids = {img['id'] for img in data['images']}
    cat_ids = {cat['id'] for cat in data['categories']}
    bad: dict[str, list] = {}
    for ann in data.get('annotations', []):
        why = _problem(ann, image_ids, cat_ids)
        if why:
            bad.setdefault(why, []).append(ann.get('id') if isinstance(ann, dict) else ann)
    if bad:
        why, ids = next(iter(bad.items()))
        total = sum(len(v) for v in bad.values())
        raise ConfigError(
            f'annotation file {name}: {total} annotation(s) cannot be scored; {len(ids)} have '
            f'{why} (annotation ids {_examples(ids)})'
        )


def _usable_segmentation(ann: dict) -> bool:
    seg = ann.get('segmentation')
    if isinstance(seg, dict):  # RLE
        return 'counts' in seg and 'size' in seg
    return (
        isinstance(seg, list)
        and bool(seg)
        and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg)
    )


def _check_segmentation(data: dict, name: str) -> None:
    anns = data.get('annotations', [])
    unusable = [a.get('id') for a in anns if not _usable_segmentation(a)]
    if unusable:
        raise ConfigError(
            f'annotation file {name}: --eval segm needs a segmentation on every annotation; '
            f'{len(unusable)} of {len(anns)} have none, an empty one or a malformed one '
            f'(annotation ids {_examples(unusable)})'
        )
    sized = all(
        isinstance(i.get('height'), int) and isinstance(i.get('width'), int) for i in data['images']
    )
    if not sized:
        raise ConfigError(
            f'annotation file {name}: --eval segm needs height and width of every image'
        )


def _warnings(data: dict, name: str) -> list[str]:
    anns = data.get('annotations', [])
    if not anns:
        return [f'no-annotations: annotation file {name} has no annotations: every AP is -1']
    sizes = {i['id']: (i.get('width'), i.get('height')) for i in data['images']}
    flat = [a['id'] for a in anns if a['bbox'][2] * a['bbox'][3] <= 0 or a['area'] <= 0]
    outside = []
    for a in anns:
        w, h = sizes[a['image_id']]
        x, y, bw, bh = a['bbox']
        if isinstance(w, (int, float)) and isinstance(h, (int, float)):
            if x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
                outside.append(a['id'])
    by_image: dict = {}
    for a in anns:
        by_image.setdefault(a['image_id'], []).append(a.get('iscrowd', 0))
    crowd_only = [i for i, flags in by_image.items() if all(flags)]
    found = []
    if flat:
        found.append(
            f'boxes-without-area: {len(flat)} annotation(s) have zero width, height or '
            f'area (ids {_examples(flat)}): no detection can match them, recall drops'
        )
    if outside:
        found.append(
            f'boxes-outside-image: {len(outside)} annotation(s) extend beyond their '
            f'image (ids {_examples(outside)})'
        )
    if crowd_only:
        found.append(
            f'crowd-only-images: {len(crowd_only)} image(s) have only crowd '
            f'annotations (ids {_examples(crowd_only)}): they are ignored when scored'
        )
    return [f'{line} ({name})' if name not in line else line for line in found]


def check_coco_annotations(data: dict, name: str, metrics: Sequence[str] = ()) -> list[str]:
    """Raise :class:`ConfigError` for what makes a COCO AP on ``data`` meaningless; return the
    named warnings (one line each) for what is legal but suspicious. ``name`` names the file."""
    check_coco_ids(data, name)
    _check_annotations(data, name)
    if 'segm' in metrics:
        _check_segmentation(data, name)
    return _warnings(data, name)


def missing_image_files(data: dict, img_dir: str | Path) -> list[Path]:
    """The image files ``data`` lists that are not in ``img_dir`` (checked before any image is
    run, so a missing one is not found minutes into a run)."""
    img_dir = Path(img_dir)
    paths = (img_dir / str(img.get('file_name', '')) for img in data.get('images', []))
    return [p for p in paths if not p.is_file()]
