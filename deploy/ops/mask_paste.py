"""Paste per-detection mask probabilities into the image (MMDetection's ``_do_paste_mask``).

A mask head predicts an ``m x m`` probability grid (28 x 28) over each detection box. Pasting
samples that grid at every image pixel centre ``(x + 0.5, y + 0.5)``: the pixel is mapped to
``[-1, 1]`` box coordinates and read with bilinear ``grid_sample`` (``align_corners=False``, zero
outside the grid), then thresholded with ``>= mask_thr_binary``. MMDetection pastes straight onto
the original image (boxes rescaled to it), which we do too: the exported graphs return the grids
and every backend shares this paste, so masks are identical across backends.

Two entry points with the same math:

* :func:`paste_masks`: all detections onto the whole image, plain traceable PyTorch (exports to
  ONNX ``GridSample``, opset >= 16, in both exporters) for callers that want it in a graph;
* :func:`paste_mask_region`: one detection onto the pixels its box can reach (the box grown by a
  pixel, as MMDetection's CPU path does), which is what post-processing uses: memory and time
  scale with the box, not the image. Outside that region a pasted probability is at most half the
  border value, so the thresholded mask (``mask_thr_binary >= 0.5``) is the same.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _box_grid(boxes: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """Pixel centres ``xs [W]``, ``ys [H]`` -> ``grid [N, H, W, 2]`` in each box's [-1, 1] frame."""
    x1, y1, x2, y2 = boxes.float().unbind(-1)
    gx = ((xs[None, :] + 0.5) - x1[:, None]) / (x2 - x1)[:, None] * 2 - 1
    gy = ((ys[None, :] + 0.5) - y1[:, None]) / (y2 - y1)[:, None] * 2 - 1
    # Degenerate (zero-width or -height) boxes divide by zero; MMDetection maps inf to 0.
    gx = torch.where(torch.isfinite(gx), gx, 0.0)
    gy = torch.where(torch.isfinite(gy), gy, 0.0)
    height, width = gy.shape[1], gx.shape[1]
    # cat of [..., 1] views, not stack: stacking expanded views copies 3-4x slower in eager
    return torch.cat(
        [
            gx[:, None, :, None].expand(-1, height, width, 1),
            gy[:, :, None, None].expand(-1, height, width, 1),
        ],
        dim=3,
    )


def paste_masks(masks: Tensor, boxes: Tensor, img_h: int, img_w: int) -> Tensor:
    """Paste every mask grid onto a whole ``img_h x img_w`` image.

    Args:
        masks: ``[N, m, m]`` float probabilities over each box.
        boxes: ``[N, 4]`` ``x1, y1, x2, y2`` in the pixels of the target image.
        img_h, img_w: target image size.

    Returns:
        ``[N, img_h, img_w]`` float32 probabilities (threshold them with ``>= mask_thr_binary``).
    """
    xs = torch.arange(img_w, dtype=torch.float32, device=masks.device)
    ys = torch.arange(img_h, dtype=torch.float32, device=masks.device)
    grid = _box_grid(boxes, xs, ys)
    return F.grid_sample(
        masks[:, None].float(), grid, mode='bilinear', padding_mode='zeros', align_corners=False
    )[:, 0]


def paste_region(box, img_h: int, img_w: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` pixel bounds a pasted mask can reach: the box grown by one pixel on
    each side (rounded outwards) and clipped to the image; empty when the box misses it."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x0_int = min(max(math.floor(x1) - 1, 0), img_w)
    y0_int = min(max(math.floor(y1) - 1, 0), img_h)
    x1_int = max(min(math.ceil(x2) + 1, img_w), x0_int)
    y1_int = max(min(math.ceil(y2) + 1, img_h), y0_int)
    return y0_int, y1_int, x0_int, x1_int


def paste_mask_region(
    mask: Tensor, box: Tensor, img_h: int, img_w: int
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Paste one mask grid onto the part of the image its box reaches.

    Args:
        mask: ``[m, m]`` float probabilities.
        box: ``[4]`` ``x1, y1, x2, y2`` in target-image pixels.
        img_h, img_w: target image size.

    Returns:
        ``probs [y1 - y0, x1 - x0]`` float32 (what :func:`paste_masks` gives on that window) and
        the window ``(y0, y1, x0, x1)`` from :func:`paste_region`.
    """
    y0, y1, x0, x1 = paste_region(box, img_h, img_w)
    xs = torch.arange(x0, x1, dtype=torch.float32, device=mask.device)
    ys = torch.arange(y0, y1, dtype=torch.float32, device=mask.device)
    if len(xs) == 0 or len(ys) == 0:
        return mask.new_zeros(len(ys), len(xs)), (y0, y1, x0, x1)
    grid = _box_grid(box[None], xs, ys)
    probs = F.grid_sample(
        mask[None, None].float(), grid, mode='bilinear', padding_mode='zeros', align_corners=False
    )[0, 0]
    return probs, (y0, y1, x0, x1)
