"""The one backend interface: named numpy inputs in, named numpy outputs out."""

from abc import ABC, abstractmethod

import numpy as np

from ..spec import ModelSpec


class Backend(ABC):
    """A loaded model on one runtime.

    Every backend takes ``input [B, 3, H, W]`` float32 and ``img_shape [B, 2]`` float32 ``(h, w)``
    and returns the detector's named outputs (``dets [B, K, 5]``, ``labels [B, K]``, ...) in
    network-input coordinates, padded rows marked by label -1. Mapping back to the original image is
    :func:`deploy.postprocess.outputs_to_results`, shared by all backends.

    :attr:`spec` is the model's contract (:class:`~deploy.spec.ModelSpec`), read from the model
    file (or built from the config for PyTorch); ``None`` only for files without one (e.g. the
    raw ``--skip-postprocess`` graph used by verification).
    """

    name: str = 'backend'
    spec: ModelSpec | None = None
    input_names: tuple[str, ...] = ('input', 'img_shape')
    output_names: tuple[str, ...] = ('dets', 'labels')

    @abstractmethod
    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch."""
