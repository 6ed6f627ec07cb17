"""Classification data: the classifier test pipeline (MMClassification / MMPretrain semantics) and
image-folder / annotation-file data sets (MMPretrain's ``ImageNet`` / ``CustomDataset``).

The pipeline is load (OpenCV, BGR) -> resize (one edge to a length, or to an exact size; OpenCV or
Pillow, as the config says) -> centre crop -> normalise, and every backend sees the tensor it
builds, so accuracy differences between backends come from the models alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, ImageError
from ..spec import PreprocessConfig
from .pipeline import load_image, normalize, pad_to

#: image suffixes a class folder is scanned for (MMPretrain's ``IMG_EXTENSIONS``)
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')

_CV2_INTERPOLATION = {
    'nearest': cv2.INTER_NEAREST,
    'bilinear': cv2.INTER_LINEAR,
    'bicubic': cv2.INTER_CUBIC,
    'area': cv2.INTER_AREA,
    'lanczos': cv2.INTER_LANCZOS4,
}


def resize_image(
    image: np.ndarray, size: tuple[int, int], backend: str = 'cv2', interpolation: str = 'bilinear'
) -> np.ndarray:
    """``mmcv.imresize`` of an ``HxWxC`` uint8 image to ``size = (w, h)``.

    ``pillow`` runs ``PIL.Image.resize`` on the array as it is (channels are resized
    independently, so BGR order does not matter); it filters over the whole source footprint
    when shrinking, where OpenCV's bilinear samples 2x2 pixels, so the two differ visibly.
    """
    if backend == 'pillow':
        from PIL import Image

        filters = {
            'nearest': Image.Resampling.NEAREST,
            'bilinear': Image.Resampling.BILINEAR,
            'bicubic': Image.Resampling.BICUBIC,
            'box': Image.Resampling.BOX,
            'lanczos': Image.Resampling.LANCZOS,
            'hamming': Image.Resampling.HAMMING,
        }
        if image.dtype != np.uint8:
            raise ImageError(f'the pillow resize needs a uint8 image, got {image.dtype}')
        return np.asarray(Image.fromarray(image).resize(size, filters[interpolation]))
    return cv2.resize(image, size, interpolation=_CV2_INTERPOLATION[interpolation])


def edge_resize_size(height: int, width: int, length: int, edge: str) -> tuple[int, int] | None:
    """``(new_w, new_h)`` that makes ``edge`` of a ``height x width`` image ``length`` pixels
    (the other side ``int(length * other / edge)``, truncated), or ``None`` when it already is
    (MMClassification skips the resize then; MMPretrain's resize to the same size is a copy)."""
    already = {
        'short': min(height, width),
        'long': max(height, width),
        'height': height,
        'width': width,
    }[edge]
    if already == length:
        return None
    if (
        (edge == 'short' and width < height)
        or (edge == 'long' and width > height)
        or edge == 'width'
    ):
        return length, int(length * height / width)
    return int(length * width / height), length


def center_crop_box(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(y1, y2, x1, x2)`` (exclusive ends) of MMCV's centre crop of ``crop = (h, w)``: offsets
    ``round((size - crop) / 2)`` with Python's round-half-to-even, the crop clipped to the
    image."""
    crop_h, crop_w = min(crop[0], height), min(crop[1], width)
    y1 = max(0, int(round((height - crop_h) / 2.0)))
    x1 = max(0, int(round((width - crop_w) / 2.0)))
    return y1, min(height, y1 + crop_h), x1, min(width, x1 + crop_w)


def apply_resize(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """``cfg``'s resize of an ``HxWx3`` uint8 image: ``cfg.resize_edge`` to ``cfg.scale[0]``, or
    exactly to ``cfg.scale = (w, h)`` (a copy-free no-op when the size is already right)."""
    height, width = image.shape[:2]
    if cfg.resize_edge is not None:
        size = edge_resize_size(height, width, cfg.scale[0], cfg.resize_edge)
    else:
        size = tuple(cfg.scale)
    if size is None or size == (width, height):
        return image
    return resize_image(image, size, cfg.resize_backend, cfg.interpolation)


class ClassificationPipeline:
    """Image (path or ``HxWx3`` uint8 BGR array) -> ``(tensor [3, H, W] float32, meta)``.

    Resize (``cfg.resize_edge`` to ``cfg.scale[0]``, or exactly to ``cfg.scale = (w, h)``) ->
    centre crop (``cfg.crop_size``) -> normalise -> pad to ``fixed_shape`` if given. ``meta`` has
    ``ori_shape``, ``img_shape`` (the network input's real size), ``pad_shape``,
    ``batch_input_shape``, ``img_id`` and ``filename``.

    Normalisation is MMCV's ``imnormalize`` (multiply by ``1 / std``); MMPretrain's data
    preprocessor divides by ``std`` instead, which differs in the last float bit at most.

    Args:
        cfg: the classifier's pre-processing.
        fixed_shape: ``(h, w)`` of a statically shaped graph: the crop is padded to it (with
            ``cfg.pad_value``); without a crop the image is resized to exactly that size.
    """

    def __init__(self, cfg: PreprocessConfig, fixed_shape: tuple[int, int] | None = None):
        self.cfg = cfg
        self.fixed_shape = tuple(fixed_shape) if fixed_shape else None
        crop = cfg.crop_size
        if self.fixed_shape and crop and (crop[0] > fixed_shape[0] or crop[1] > fixed_shape[1]):
            raise ConfigError(
                f'the static input shape {fixed_shape} is smaller than the centre crop {crop} '
                'of the config: use the crop size (or --dynamic-export)'
            )

    def __call__(self, image, img_id: int | None = None) -> tuple[torch.Tensor, dict]:
        filename = None
        if not isinstance(image, np.ndarray):
            filename = str(image)
            image = load_image(image)
        elif image.ndim != 3 or image.shape[2] != 3:
            raise ImageError(f'expected an HxWx3 BGR image, got an array of shape {image.shape}')
        cfg = self.cfg
        ori_h, ori_w = image.shape[:2]
        if self.fixed_shape is not None and cfg.crop_size is None:
            # a static graph without a crop: every image is resized to exactly its shape
            exact = (self.fixed_shape[1], self.fixed_shape[0])
            image = apply_resize(image, replace(cfg, scale=exact, resize_edge=None))
        else:
            image = apply_resize(image, cfg)
        if cfg.crop_size is not None:
            y1, y2, x1, x2 = center_crop_box(image.shape[0], image.shape[1], cfg.crop_size)
            image = image[y1:y2, x1:x2]
        height, width = image.shape[:2]
        image = normalize(image, cfg.mean, cfg.std, cfg.to_rgb)
        pad_h, pad_w = self.fixed_shape or (height, width)
        image = pad_to(image, pad_h, pad_w, cfg.pad_value)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        meta = dict(
            ori_shape=(ori_h, ori_w),
            img_shape=(height, width),
            pad_shape=(pad_h, pad_w),
            batch_input_shape=(pad_h, pad_w),
            img_id=img_id,
            filename=filename,
        )
        return tensor, meta


# --------------------------------------------------------------------------------------------
# data sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassificationSamples:
    """The images of a classification set with their labels.

    Attributes:
        paths: image files.
        labels: ``[N]`` int64 class indices (into ``class_names`` when known).
        class_names: the set's classes in label order, or ``None`` when neither the config nor
            the layout names them (an annotation file of ``path label`` lines alone).
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...] | None


def find_class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (one per class)."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def _scan_folder(root: Path, folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root / folder, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMG_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return found


def _read_annotation_file(ann_file: Path, img_prefix: Path) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    try:
        lines = ann_file.read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f'cannot read the annotation file {ann_file}: {err}') from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip('-').isdigit() or int(parts[1]) < 0:
            raise ConfigError(
                f'{ann_file}, line {number}: expected `image_path label` with a label >= 0, '
                f'got {line.strip()!r}'
            )
        paths.append(str(img_prefix / parts[0]))
        labels.append(int(parts[1]))
    return paths, labels


def load_classification_samples(
    img_prefix: str | os.PathLike,
    ann_file: str | os.PathLike | None = None,
    classes: tuple[str, ...] | None = None,
    config_key: str = 'data.test',
) -> ClassificationSamples:
    """Read a classification set as MMPretrain's ``CustomDataset`` / ``ImageNet`` do.

    * With ``ann_file``: one ``image_path label`` per line (path relative to ``img_prefix``,
      label an index into ``classes``).
    * Without: every image under ``img_prefix/<class>/`` (sorted; the sorted folder names are
      the classes, which ``classes`` from the config may rename but must match in number).

    Raises:
        ConfigError: a missing folder or file, a malformed line, no images, or a class count
            that contradicts the folders.
    """
    img_prefix = Path(img_prefix)
    hint = (
        'generate the data set with python tools/dataset/generate_synthetic_cls.py, or set '
        f'{config_key}'
    )
    if ann_file is not None:
        ann_file = Path(ann_file)
        if not ann_file.is_file():
            raise ConfigError(f'annotation file not found: {ann_file} ({hint})')
        paths, labels = _read_annotation_file(ann_file, img_prefix)
        class_names = classes
    else:
        if not img_prefix.is_dir():
            raise ConfigError(f'image folder not found: {img_prefix} ({hint})')
        folders = find_class_folders(img_prefix)
        if classes is not None and len(classes) != len(folders):
            raise ConfigError(
                f'the config names {len(classes)} classes, but {img_prefix} has {len(folders)} '
                'class folders'
            )
        paths, labels = [], []
        for label, folder in enumerate(folders):
            found = _scan_folder(img_prefix, folder)
            paths += found
            labels += [label] * len(found)
        class_names = classes if classes is not None else tuple(folders)
    if not paths:
        where = ann_file if ann_file is not None else img_prefix
        raise ConfigError(f'no images in the classification set {where}')
    labels_array = np.asarray(labels, np.int64)
    if class_names is not None and labels_array.max() >= len(class_names):
        raise ConfigError(
            f'label {int(labels_array.max())} in {ann_file} is out of range for the '
            f'{len(class_names)} classes of the set'
        )
    return ClassificationSamples(tuple(paths), labels_array, class_names)


class ClassificationDataset(Dataset):
    """The images of :class:`ClassificationSamples` through a pipeline, in order.

    ``dataset[i]`` is ``(tensor [3, H, W] float32, meta)`` with ``meta['img_id'] = i`` and
    ``meta['gt_label']``; batch it with :func:`deploy.datasets.build_dataloader`.
    """

    def __init__(self, samples: ClassificationSamples, pipeline: ClassificationPipeline):
        self.samples = samples
        self.pipeline = pipeline

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.samples.class_names

    def __len__(self) -> int:
        return len(self.samples.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        tensor, meta = self.pipeline(self.samples.paths[index], img_id=index)
        meta['gt_label'] = int(self.samples.labels[index])
        return tensor, meta
