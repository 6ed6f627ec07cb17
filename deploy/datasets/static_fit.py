"""The rule a static-shape model file follows, and how often it departs from PyTorch's.

A file exported without ``--dynamic-export`` takes one input size, its ``H x W`` canvas. Every
image is scaled, keeping its aspect ratio, by the largest factor that fits the canvas, then padded
to it (:func:`deploy.datasets.pipeline.fit_size`). PyTorch (and a dynamic file) follows
MMDetection's keep-ratio rule instead (:func:`deploy.datasets.pipeline.rescale_size`). The
default canvas (``h x w`` = short side x padded long side of the config's scale) holds every
landscape image at exactly MMDetection's size, so the two agree there; a portrait image, and any
image under a canvas of another shape, is fitted at another scale, and its detections (hence the
AP) can differ from PyTorch's. :func:`fitted_differently` counts those images so a run can say so.

A file with the pre-processing in the graph (``--preprocess-in-graph``) takes decoded images of
any size and resizes them by MMDetection's rule inside the graph: "static" there is the batch
(1) only, and it is verified against PyTorch's own rule.
"""

from collections.abc import Iterable

from ..spec import PreprocessConfig
from .pipeline import rescale_size


def pytorch_size(w: int, h: int, preprocess: PreprocessConfig) -> tuple[int, int]:
    """``(new_w, new_h)`` MMDetection's pipeline resizes a ``w x h`` image to."""
    if preprocess.resize_factor is not None:
        f = preprocess.resize_factor
        return int(w * f + 0.5), int(h * f + 0.5)
    if preprocess.keep_ratio:
        return rescale_size(w, h, preprocess.scale)[0]
    return tuple(preprocess.scale)


def fitted_differently(metas: Iterable[dict], preprocess: PreprocessConfig) -> int:
    """How many images of a batch (its pipeline ``metas``) were resized to another size than
    PyTorch resizes them to."""
    count = 0
    for meta in metas:
        ori_h, ori_w = meta['ori_shape'][:2]
        new_h, new_w = meta['img_shape'][:2]
        count += (new_w, new_h) != tuple(pytorch_size(ori_w, ori_h, preprocess))
    return count


def static_note(count: int, total: int, canvas: tuple[int, int]) -> str:
    """The line a run of a static file prints about the images it fitted differently."""
    h, w = canvas
    if not count:
        return (
            f'note: static {h}x{w} input: all {total} images fitted at the size PyTorch resizes '
            'them to'
        )
    return (
        f'note: static {h}x{w} input: {count} of {total} images (e.g. portrait ones) were fitted '
        'into the canvas at a smaller size than PyTorch resizes them to (MMDetection keep-ratio '
        'rule); their detections and the AP can differ from PyTorch (export with '
        '--dynamic-export for the same sizes)'
    )
