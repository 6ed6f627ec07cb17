"""The test pipeline: load (OpenCV, BGR) -> keep-ratio resize -> normalise -> pad, MMCV semantics.

Every backend sees exactly the same network input, built here, so accuracy differences between
backends can only come from the models themselves.
"""
from pathlib import Path

import cv2
import numpy as np
import torch

from ..config.preprocess import PreprocessConfig
from ..errors import ImageError


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
    """``mmcv.imnormalize``: optional BGR->RGB, then ``(x - mean) / std`` in float32."""
    image = image.astype(np.float32)
    if to_rgb:
        image = image[..., ::-1]
    return (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def pad_to(image: np.ndarray, height: int, width: int, value: float = 0.0) -> np.ndarray:
    """Pad bottom/right to ``height x width``."""
    h, w = image.shape[:2]
    if h == height and w == width:
        return image
    out = np.full((height, width, *image.shape[2:]), value, dtype=image.dtype)
    out[:h, :w] = image
    return out


class TestPipeline:
    """Image (path or BGR array) -> ``(tensor [3, H, W] float32, meta)``.

    Args:
        cfg: the model's pre-processing.
        fixed_shape: ``(h, w)`` of a statically shaped model: the image is fitted into it keeping
            its aspect ratio and padded to exactly that shape, instead of the config's resize.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, cfg: PreprocessConfig, fixed_shape: tuple[int, int] | None = None):
        self.cfg = cfg
        self.fixed_shape = tuple(fixed_shape) if fixed_shape else None

    def __call__(self, image, img_id: int | None = None) -> tuple[torch.Tensor, dict]:
        filename = None
        if not isinstance(image, np.ndarray):
            filename = str(image)
            image = load_image(image)
        ori_h, ori_w = image.shape[:2]
        cfg = self.cfg
        if self.fixed_shape is not None:
            new_w, new_h = fit_size(ori_w, ori_h, self.fixed_shape)
        elif cfg.keep_ratio:
            (new_w, new_h), _ = rescale_size(ori_w, ori_h, cfg.scale)
        else:
            new_w, new_h = cfg.scale
        if (new_w, new_h) != (ori_w, ori_h):
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        scale_factor = np.array([new_w / ori_w, new_h / ori_h] * 2, dtype=np.float32)
        image = normalize(image, cfg.mean, cfg.std, cfg.to_rgb)
        if self.fixed_shape is not None:
            pad_h, pad_w = self.fixed_shape
        elif cfg.size_divisor:
            div = cfg.size_divisor
            pad_h, pad_w = -(-new_h // div) * div, -(-new_w // div) * div
        else:
            pad_h, pad_w = new_h, new_w
        image = pad_to(image, pad_h, pad_w, cfg.pad_value)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        meta = dict(ori_shape=(ori_h, ori_w), img_shape=(new_h, new_w), pad_shape=(pad_h, pad_w),
                    batch_input_shape=(pad_h, pad_w), scale_factor=scale_factor,
                    img_id=img_id, filename=filename)
        return tensor, meta


def collate(samples: list[tuple[torch.Tensor, dict]],
            pad_value: float = 0.0) -> tuple[torch.Tensor, list[dict]]:
    """Batch samples, padding each bottom/right to the largest size in the batch."""
    height = max(t.shape[1] for t, _ in samples)
    width = max(t.shape[2] for t, _ in samples)
    batch = torch.full((len(samples), 3, height, width), pad_value, dtype=torch.float32)
    metas = []
    for i, (tensor, meta) in enumerate(samples):
        batch[i, :, :tensor.shape[1], :tensor.shape[2]] = tensor
        metas.append(dict(meta, batch_input_shape=(height, width)))
    return batch, metas
