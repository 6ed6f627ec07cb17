"""Ground truth made of a reference run's own detections: AP parity for models without labels.

A model with random weights, or one trained on other data, scores about 0 AP on the data set's real
annotations, so "the backend's AP equals PyTorch's" proves nothing there. Against the reference's
own best detections the reference scores high AP, and every box, score, label or mask a backend
gets wrong lowers the backend's AP.
"""

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import DeployError
from ..fileio import write_atomic
from ..finite import check_detections_finite


def pseudo_ground_truth(
    coco_results: Sequence[dict],
    annotations: dict,
    per_image: int = 100,
    num_images: int | None = None,
) -> dict:
    """A COCO annotation dict: the images and categories of ``annotations``, and as objects the
    ``per_image`` highest-scoring of the reference's detections on each image.

    Args:
        coco_results: the reference's detections as COCO result dicts (``image_id``,
            ``category_id``, ``bbox`` as ``[x, y, w, h]``, ``score``, optional RLE
            ``segmentation``), as ``tools/test.py --format-only`` writes them.
        annotations: the data set's COCO annotation dict (images and categories are kept).
        num_images: keep only the first this many images (a quicker parity run on a slow
            model). Images where the reference found nothing stay: a backend's detections there
            are false positives.

    Degenerate detections (under 2 pixels wide or high, or an empty mask) are left out: nobody,
    the reference included, can match them.
    """
    from pycocotools import mask as mask_utils

    check_detections_finite(coco_results, 'the reference detections')
    by_image: dict[int, list[dict]] = {}
    for det in coco_results:
        by_image.setdefault(int(det['image_id']), []).append(det)
    images = annotations['images'][:num_images]
    objects = []
    for img in images:
        best = sorted(by_image.get(img['id'], ()), key=lambda det: -det['score'])[:per_image]
        for det in best:
            x, y, w, h = (float(v) for v in det['bbox'])
            segm = det.get('segmentation')
            if w < 2 or h < 2 or (segm is not None and not mask_utils.area(segm)):
                continue
            obj = dict(
                id=len(objects) + 1,
                image_id=int(img['id']),
                category_id=int(det['category_id']),
                bbox=[x, y, w, h],
                area=w * h,
                iscrowd=0,
            )
            if segm is not None:
                obj['segmentation'] = segm
                obj['area'] = float(mask_utils.area(segm))
            objects.append(obj)
    if not objects:
        raise DeployError(
            'the reference has no usable detections on these images: a pseudo ground truth '
            'needs some (lower model.test_cfg.score_thr, or check the checkpoint)'
        )
    return dict(annotations, images=images, annotations=objects)


def write_pseudo_ground_truth(
    coco_results: Sequence[dict], ann_file: str | Path, out_file: str | Path, **kwargs
) -> Path:
    """:func:`pseudo_ground_truth` of the data set in ``ann_file``, written to ``out_file``
    under a temporary name and renamed when complete."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DeployError(f'annotation file not found: {ann_file}')
    data = pseudo_ground_truth(coco_results, json.loads(ann_file.read_text()), **kwargs)
    return write_atomic(out_file, json.dumps(data))
