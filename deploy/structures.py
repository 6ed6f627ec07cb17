"""The typed result every backend is turned into: evaluation never knows where it came from.

Image meta convention (one ``dict`` per image, produced by the test pipeline):
    ``ori_shape``    (h, w) of the decoded image file
    ``img_shape``    (h, w) after resize, before padding: the real image inside the network input
    ``pad_shape``    (h, w) after padding to ``size_divisor``
    ``img_offset``   (top, left) of the image inside the network input: (0, 0) unless the
                     pipeline center-pads (``PreprocessConfig.center_pad``); detections are
                     relative to the image's own top-left corner either way
    ``batch_input_shape`` (h, w) of the batched tensor (images padded to a common size)
    ``scale_factor`` float32 array ``[w_scale, h_scale, w_scale, h_scale]``: input = original*scale
    ``img_id``       COCO image id (int), ``filename`` the path
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class DetectionResult:
    """Detections of one image in original-image pixel coordinates.

    Attributes:
        boxes: ``[N, 4]`` float32, ``x1, y1, x2, y2``.
        scores: ``[N]`` float32.
        labels: ``[N]`` int64, 0-based class index of the model.
        masks: optional ``[N, H, W]`` bool masks at the original image size, or a list of N COCO RLE
            dicts when masks are encoded as they stream.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | list | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> 'DetectionResult':
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass
class ClassificationResult:
    """The class probabilities of one image, from any backend.

    Attributes:
        scores: ``[C]`` float32, the model's ``scores`` output row (softmax probabilities).
    """

    scores: np.ndarray

    @property
    def label(self) -> int:
        """The top-1 class (the lower index among equal scores)."""
        return int(self.topk(1)[0])

    def topk(self, k: int) -> np.ndarray:
        """``[k]`` int64 class indices by decreasing score, ties by increasing index."""
        order = np.lexsort((np.arange(self.scores.size), -self.scores))
        return order[:k].astype(np.int64)
