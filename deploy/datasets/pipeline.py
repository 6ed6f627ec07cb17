"""The test pipeline: load (OpenCV, BGR) -> resize -> [center pad] -> normalise -> pad, MMCV
semantics.

Every backend sees exactly the same network input, built here, so accuracy differences between
backends can only come from the models themselves.
"""

from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import ImageError
from ..spec import CenterPad, PreprocessConfig


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as ``HxWx3`` uint8 BGR; a missing or undecodable file raises ImageError."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f'image not found: {path}')
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f'cannot decode image {path}: not a supported image file')
    return image


def rescale_size(w: int, h: int, scale: tuple[int, int]) -> tuple[tuple[int, int], float]:
    """MMCV's keep-ratio rule: ``scale`` is ``(long_edge, short_edge)`` limits, in either order.

    Returns ``((new_w, new_h), factor)`` with ``factor = min(long/max(h,w), short/min(h,w))`` and
    sizes rounded as ``int(x * factor + 0.5)``.
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return (int(w * factor + 0.5), int(h * factor + 0.5)), factor


def fit_size(w: int, h: int, box: tuple[int, int]) -> tuple[int, int]:
    """Keep-ratio size of a ``w x h`` image fitted inside ``box = (box_h, box_w)``."""
    factor = min(box[1] / w, box[0] / h)
    return min(int(w * factor + 0.5), box[1]), min(int(h * factor + 0.5), box[0])


def normalize(image: np.ndarray, mean, std, to_rgb: bool) -> np.ndarray:
    """``mmcv.imnormalize``: float32, optional BGR->RGB, then ``(x - mean) * (1 / std)``.

    ``image`` is ``HxWx3``; ``mean``/``std`` are in the channel order after the swap. MMCV's
    arithmetic exactly: the subtraction in float32, the product with the float64 reciprocal of
    ``std`` rounded to float32. Written in numpy rather than with MMCV's OpenCV calls, whose
    reading of a ``1x3`` array as a per-channel scalar changed in OpenCV 5.1 (it then subtracted
    the first mean from every channel).
    """
    x = image.astype(np.float32)
    if to_rgb:
        x = x[..., ::-1]
    x = x - np.asarray(mean, np.float32)
    return (x.astype(np.float64) * (1.0 / np.asarray(std, np.float64))).astype(np.float32)


def pad_size(height: int, width: int, size_divisor: int | None) -> tuple[int, int]:
    """``(h, w)`` rounded up to multiples of ``size_divisor`` (``mmcv.impad_to_multiple``)."""
    if not size_divisor:
        return height, width
    return -(-height // size_divisor) * size_divisor, -(-width // size_divisor) * size_divisor


def pad_to(image: np.ndarray, height: int, width: int, value: float = 0.0) -> np.ndarray:
    """Pad ``image`` (``HxW`` or ``HxWxC``) bottom/right with ``value`` to ``height x width``."""
    h, w = image.shape[:2]
    if h == height and w == width:
        return image
    out = np.full((height, width, *image.shape[2:]), value, dtype=image.dtype)
    out[:h, :w] = image
    return out


def pad_raw_to_size(image: np.ndarray, size: tuple[int, int], value: float) -> np.ndarray:
    """MMDetection 3.x's ``Pad(size=...)``: the resized raw image padded bottom/right with
    ``value`` to ``size (h, w)``; ImageError when it is larger (a resize scale above the pad)."""
    h, w = image.shape[:2]
    if h > size[0] or w > size[1]:
        raise ImageError(
            f'the resized image ({h}x{w}) is larger than the Pad size {size[0]}x{size[1]} of '
            'the test pipeline: make the Resize scale fit the Pad size'
        )
    return pad_to(image, size[0], size[1], value)


def center_pad(image: np.ndarray, pad: CenterPad) -> tuple[np.ndarray, tuple[int, int]]:
    """MMDetection's ``RandomCenterCropPad`` in test mode: ``image`` (``HxWx3``) pasted into the
    middle of a canvas filled with ``pad.fill`` (see :class:`~deploy.spec.CenterPad`).

    Returns:
        The canvas (the image's dtype) and the image's ``(top, left)`` inside it.
    """
    h, w = image.shape[:2]
    canvas_h, canvas_w = pad.canvas_size(h, w)
    top, left = pad.offset(h, w)
    # MMDetection pastes rows [0, min(h // 2 + canvas_h // 2, h)): an image as tall as an odd
    # canvas (h = 127, 255, ...) loses its last row there, and likewise for columns.
    rows = min(h // 2 + canvas_h // 2, h)
    cols = min(w // 2 + canvas_w // 2, w)
    canvas = np.empty((canvas_h, canvas_w, image.shape[2]), image.dtype)
    canvas[:] = np.asarray(pad.fill, np.float64).astype(image.dtype)
    canvas[top : top + rows, left : left + cols] = image[:rows, :cols]
    return canvas, (top, left)


def _fit_center_padded(w: int, h: int, shape: tuple[int, int], pad: CenterPad) -> tuple[int, int]:
    """Keep-ratio size of a ``w x h`` image whose center-pad canvas fits in ``shape (h, w)``."""
    box_h, box_w = shape
    while box_h > 1 and pad.canvas_size(box_h, 1)[0] > shape[0]:
        box_h -= 1
    while box_w > 1 and pad.canvas_size(1, box_w)[1] > shape[1]:
        box_w -= 1
    return fit_size(w, h, (box_h, box_w))


class TestPipeline:
    """Image (path or ``HxWx3`` uint8 BGR array) -> ``(tensor [3, H, W] float32, meta)``.

    Load (OpenCV, BGR; float32 with ``to_float32``) -> resize (keep-ratio ``rescale_size``, by
    ``resize_factor``, or exactly ``scale``; bilinear) -> with ``center_pad``, paste into the
    middle of a canvas -> normalise -> pad bottom/right to ``size_divisor``. ``meta`` has the
    keys of :mod:`deploy.structures` (``img_offset``: the image's ``(top, left)`` inside the
    input); ``batch_input_shape`` is the padded shape until :func:`collate` sets the batch's.

    Args:
        cfg: the model's pre-processing.
        fixed_shape: ``(h, w)`` of a statically shaped model: the image is fitted into it keeping
            its aspect ratio and padded to exactly that shape, instead of the config's resize.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, cfg: PreprocessConfig, fixed_shape: tuple[int, int] | None = None):
        self.cfg = cfg
        self.fixed_shape = tuple(fixed_shape) if fixed_shape else None
        self._tables: np.ndarray | None = None  # [3, 256] normalised uint8 levels, made once

    def __call__(self, image, img_id: int | None = None) -> tuple[torch.Tensor, dict]:
        filename = None
        if not isinstance(image, np.ndarray):
            filename = str(image)
            image = load_image(image)
        elif image.ndim != 3 or image.shape[2] != 3:
            raise ImageError(f'expected an HxWx3 BGR image, got an array of shape {image.shape}')
        ori_h, ori_w = image.shape[:2]
        cfg = self.cfg
        if cfg.to_float32:
            image = image.astype(np.float32)
        if self.fixed_shape is not None:
            if cfg.center_pad is not None:
                new_w, new_h = _fit_center_padded(ori_w, ori_h, self.fixed_shape, cfg.center_pad)
            else:
                new_w, new_h = fit_size(ori_w, ori_h, self.fixed_shape)
        elif cfg.resize_factor is not None:  # mmcv.imrescale by a factor
            new_w = int(ori_w * cfg.resize_factor + 0.5)
            new_h = int(ori_h * cfg.resize_factor + 0.5)
        elif cfg.keep_ratio:
            (new_w, new_h), _ = rescale_size(ori_w, ori_h, cfg.scale)
        else:
            new_w, new_h = cfg.scale
        if (new_w, new_h) != (ori_w, ori_h):
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        scale_factor = np.array([new_w / ori_w, new_h / ori_h] * 2, dtype=np.float32)
        offset = (0, 0)
        if cfg.center_pad is not None:
            image, offset = center_pad(image, cfg.center_pad)
        img_shape = (new_h, new_w)
        if cfg.pad_to_size is not None:  # a static graph's own size is the canvas
            canvas = self.fixed_shape or cfg.pad_to_size
            image = pad_raw_to_size(image, canvas, cfg.pad_to_size_value)
            img_shape = image.shape[:2]  # MMDetection 3.x's Pad: boxes clip to the canvas
        if self.fixed_shape is not None:
            pad_h, pad_w = self.fixed_shape
        else:
            pad_h, pad_w = image.shape[:2]
            if cfg.pad_to_square:  # mmcv's Pad(pad_to_square=True): a square of the long side
                pad_h = pad_w = max(pad_h, pad_w)
            pad_h, pad_w = pad_size(pad_h, pad_w, cfg.size_divisor)
        if image.dtype == np.uint8:
            chw = self._normalized_chw(image, pad_h, pad_w)
        else:
            image = normalize(image, cfg.mean, cfg.std, cfg.to_rgb)
            image = pad_to(image, pad_h, pad_w, cfg.pad_value)
            chw = np.ascontiguousarray(image.transpose(2, 0, 1))
        tensor = torch.from_numpy(chw)
        meta = dict(
            ori_shape=(ori_h, ori_w),
            img_shape=img_shape,
            pad_shape=(pad_h, pad_w),
            batch_input_shape=(pad_h, pad_w),
            img_offset=offset,
            scale_factor=scale_factor,
            img_id=img_id,
            filename=filename,
        )
        return tensor, meta

    def _normalized_chw(self, image: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
        """A uint8 ``HxWx3`` image normalised, padded and laid out ``[3, pad_h, pad_w]``.

        :func:`normalize` is element-wise, so a uint8 pixel has 256 possible results per
        channel: they are computed once with the same arithmetic and looked up, which gives the
        same bits at a fraction of the cost (the float64 product dominated pre-processing).
        """
        cfg = self.cfg
        if self._tables is None:
            levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)
            self._tables = normalize(levels, cfg.mean, cfg.std, cfg.to_rgb)[:, 0, :].T.copy()
        out = np.full((3, pad_h, pad_w), cfg.pad_value, dtype=np.float32)
        h, w = image.shape[:2]
        for channel in range(3):
            source = 2 - channel if cfg.to_rgb else channel
            np.take(self._tables[channel], image[:, :, source], out=out[channel, :h, :w])
        return out


class DecodedImagePipeline:
    """Image (path or array) -> ``(tensor [H, W, 3] uint8 BGR, meta)`` unchanged: the input of
    models with the pre-processing in the graph (``--preprocess-in-graph``), whose outputs are
    already in image pixels (``scale_factor`` 1)."""

    def __call__(self, image, img_id: int | None = None) -> tuple[torch.Tensor, dict]:
        filename = None
        if not isinstance(image, np.ndarray):
            filename = str(image)
            image = load_image(image)
        elif image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(
                f'expected an HxWx3 uint8 BGR image, got {image.dtype} of shape {image.shape}'
            )
        h, w = image.shape[:2]
        meta = dict(
            ori_shape=(h, w),
            img_shape=(h, w),
            pad_shape=(h, w),
            batch_input_shape=(h, w),
            scale_factor=np.ones(4, np.float32),
            img_id=img_id,
            filename=filename,
        )
        return torch.from_numpy(np.ascontiguousarray(image)), meta


def network_inputs(img: torch.Tensor, metas: list[dict]) -> dict[str, np.ndarray]:
    """The named graph inputs of a collated batch: ``input`` + ``img_shape`` for the test
    pipeline's tensors, ``image`` for decoded uint8 images."""
    if img.dtype == torch.uint8:
        return dict(image=img.numpy())
    shapes = np.asarray([m['img_shape'][:2] for m in metas], np.float32)
    return dict(input=img.numpy(), img_shape=shapes)


def collate(
    samples: list[tuple[torch.Tensor, dict]], pad_value: float = 0.0
) -> tuple[torch.Tensor, list[dict]]:
    """Stack ``(tensor [3, H, W], meta)`` samples into ``([B, 3, Hmax, Wmax], metas)``.

    Every image is padded bottom/right with ``pad_value`` to the largest padded size in the
    batch, and each meta gets ``batch_input_shape = (Hmax, Wmax)``. Decoded uint8 images
    (``[H, W, 3]``, :class:`DecodedImagePipeline`) are stacked as they are: they must have one
    size.
    """
    if samples[0][0].dtype == torch.uint8:
        sizes = {tuple(t.shape) for t, _ in samples}
        if len(sizes) > 1:
            raise ImageError(
                f'a batch of decoded images must have one size, got {sorted(sizes)}: use batch '
                'size 1 for images of different sizes'
            )
        return torch.stack([t for t, _ in samples]), [dict(m) for _, m in samples]
    height = max(t.shape[1] for t, _ in samples)
    width = max(t.shape[2] for t, _ in samples)
    batch = torch.full((len(samples), 3, height, width), pad_value, dtype=torch.float32)
    metas = []
    for i, (tensor, meta) in enumerate(samples):
        batch[i, :, : tensor.shape[1], : tensor.shape[2]] = tensor
        metas.append(dict(meta, batch_input_shape=(height, width)))
    return batch, metas
