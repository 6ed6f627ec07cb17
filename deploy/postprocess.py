"""Backend outputs -> :class:`DetectionResult` in original-image coordinates (all backends).

Boxes are divided by the pipeline's ``scale_factor``. Mask models also return
``masks [B, K, m, m]``: each detection's mask probabilities over its box (the graph's last step).
They are pasted here, straight onto the original image with the rescaled box (MMDetection's
``rescale=True`` path, see :mod:`deploy.ops.mask_paste`), thresholded with ``>= mask_thr_binary``,
and by default encoded to COCO RLE one mask at a time, so memory stays flat however many images
stream through. Every backend goes through this same code, so masks differ between backends only
where their probabilities do.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from .ops.mask_paste import paste_mask_region
from .spec import ResultFilter
from .structures import DetectionResult

MASK_FORMATS = ('rle', 'bitmap')


def outputs_to_results(
    outputs: dict[str, np.ndarray],
    img_metas: list[dict],
    result_filter: ResultFilter | None = None,
    mask_format: str = 'rle',
) -> list[DetectionResult]:
    """Drop padding rows and map boxes (and masks) back to each original image.

    Args:
        outputs: ``dets [B, K, 5]``, ``labels [B, K]`` in network-input coordinates; padding rows
            have label -1. Optional ``masks [B, K, m, m]`` probabilities over each box.
        img_metas: the pipeline metas of the batch (``scale_factor`` and ``ori_shape`` are used;
            without ``ori_shape`` the original size is ``img_shape / scale_factor``).
        result_filter: settings applied after the graph (:func:`deploy.spec.reconcile_settings`):
            a stricter ``score_thr`` and ``max_per_img`` than the model's, and the mask
            probability threshold (inclusive; default 0.5, MMDetection's ``mask_thr_binary``).
        mask_format: ``'rle'`` (a list of COCO RLE dicts, ``counts`` as str) or ``'bitmap'``
            (``[N, H, W]`` bool).

    Returns:
        One :class:`DetectionResult` per image.
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f'mask_format must be one of {MASK_FORMATS}, got {mask_format!r}')
    result_filter = result_filter or ResultFilter()
    results = []
    for i, meta in enumerate(img_metas):
        dets, labels = outputs['dets'][i], outputs['labels'][i]
        keep = labels >= 0
        if result_filter.score_thr is not None:
            keep &= dets[:, 4] > result_filter.score_thr
        if result_filter.max_per_img is not None:  # rows are sorted by score
            keep &= np.cumsum(keep) <= result_filter.max_per_img
        scale = np.asarray(meta.get('scale_factor', np.ones(4)), np.float32).reshape(-1)
        if scale.size == 2:  # MMDetection 3.x style (w, h)
            scale = np.tile(scale, 2)
        boxes = (dets[keep, :4] / scale).astype(np.float32)
        masks = None
        if outputs.get('mask_logits') is not None:
            masks = canvas_masks_to_image(
                outputs['mask_logits'][i][keep],
                meta,
                _original_shape(meta, scale),
                result_filter.mask_thr_binary,
                mask_format,
            )
        if outputs.get('masks') is not None:
            masks = paste_masks_to_image(
                outputs['masks'][i][keep],
                boxes,
                _original_shape(meta, scale),
                result_filter.mask_thr_binary,
                mask_format,
            )
        results.append(
            DetectionResult(
                boxes=boxes,
                scores=dets[keep, 4].astype(np.float32),
                labels=labels[keep].astype(np.int64),
                masks=masks,
            )
        )
    return results


def paste_masks_to_image(
    mask_probs: np.ndarray,
    boxes: np.ndarray,
    image_shape: tuple[int, int],
    mask_thr_binary: float = 0.5,
    mask_format: str = 'rle',
):
    """Paste ``mask_probs [N, m, m]`` over ``boxes [N, 4]`` (image pixels) into an image of
    ``image_shape (h, w)``, threshold, and return RLE dicts or an ``[N, h, w]`` bool array."""
    height, width = image_shape
    bitmaps = np.zeros((len(boxes), height, width), bool) if mask_format == 'bitmap' else None
    rles = []
    canvas = np.zeros((height, width), np.uint8, order='F') if mask_format == 'rle' else None
    probs_t = torch.from_numpy(np.ascontiguousarray(mask_probs, np.float32))
    boxes_t = torch.from_numpy(np.ascontiguousarray(boxes, np.float32))
    for j in range(len(boxes)):
        probs, (y0, y1, x0, x1) = paste_mask_region(probs_t[j], boxes_t[j], height, width)
        region = (probs >= mask_thr_binary).numpy()
        if bitmaps is not None:
            bitmaps[j, y0:y1, x0:x1] = region
            continue
        canvas[y0:y1, x0:x1] = region
        rles.append(_encode_rle(canvas))
        canvas[y0:y1, x0:x1] = 0
    return bitmaps if bitmaps is not None else rles


def canvas_masks_to_image(
    logits: np.ndarray,
    meta: dict,
    image_shape: tuple[int, int],
    mask_thr_binary: float = 0.5,
    mask_format: str = 'rle',
):
    """One-stage mask logits over the input canvas (RTMDet-Ins, ``[N, h, w]`` at the mask
    stride) -> RLE dicts or ``[N, H, W]`` bool masks of the original image, as MMDetection:
    bilinear upsampling to the canvas, bilinear resize to ``ceil(canvas_h / sx)`` x
    ``ceil(canvas_w / sy)`` (its height divided by the *x* factor and the width by the *y* one),
    crop to the image, ``sigmoid > mask_thr_binary``."""
    height, width = image_shape
    num, h, w = logits.shape
    canvas_h, canvas_w = meta.get('batch_input_shape') or (h * 8, w * 8)
    stride = canvas_h // h
    # MMDetection's factors are float64 new/old sizes: recover them from the float32 ones
    factor = np.asarray(meta.get('scale_factor', np.ones(2)), np.float64).reshape(-1)[:2]
    new_w, new_h = round(factor[0] * width), round(factor[1] * height)
    size = (
        math.ceil(h * stride * (1 / (new_w / width))),
        math.ceil(w * stride * (1 / (new_h / height))),
    )
    bitmaps = np.zeros((num, height, width), bool)
    source = torch.from_numpy(np.ascontiguousarray(logits, np.float32))
    for start in range(0, num, 8):  # a few canvases at a time: memory stays flat
        x = F.interpolate(
            source[None, start : start + 8],
            size=(h * stride, w * stride),
            mode='bilinear',
            align_corners=False,
        )
        x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)[0, :, :height, :width]
        masks = (x.sigmoid() > mask_thr_binary).numpy()
        bitmaps[start : start + len(masks), : masks.shape[1], : masks.shape[2]] = masks
    if mask_format == 'bitmap':
        return bitmaps
    return [_encode_rle(np.asfortranarray(m.astype(np.uint8))) for m in bitmaps]


def _encode_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(mask[:, :, None])[0]
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def _original_shape(meta: dict, scale: np.ndarray) -> tuple[int, int]:
    if meta.get('ori_shape') is not None:
        return int(meta['ori_shape'][0]), int(meta['ori_shape'][1])
    h, w = meta['img_shape'][:2]
    return int(round(h / float(scale[1]))), int(round(w / float(scale[0])))
