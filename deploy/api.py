"""The Python API: load a detector once, run it on images, draw what it found.

    >>> from deploy import Detector
    >>> detector = Detector(
    ...     'checkpoints/retinanet_r18_tiny_synthetic.pth',
    ...     config='configs/bundled/retinanet_r18_tiny_synthetic.py',
    ...     logger=None,
    ... )
    >>> found = detector('demo/demo.jpg')                # a path, or an HxWx3 BGR uint8 array
    >>> found.boxes.shape[1], len(found) > 0
    (4, True)
    >>> found.names[0] in detector.class_names
    True
    >>> picture = detector.draw('demo/demo.jpg', found)  # BGR array, as cv2.imwrite takes it
    >>> batch = detector(['demo/demo.jpg', picture])     # a list runs as a list
    >>> len(batch)
    2

The same object runs an exported file: ``Detector('model.onnx')`` (ONNX Runtime; the file's
model spec says how to pre-process, so the config is optional), ``Detector('model.onnx',
backend='openvino', precision='bf16')``, ``Detector('model.engine')`` (TensorRT). The backend
session is made once, in the constructor, and serves every call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import BACKENDS, build_backend
from .errors import ConfigError
from .structures import DetectionResult

#: the backend a model file runs on when none is named, by suffix
BACKEND_OF_SUFFIX = {
    '.onnx': 'onnxruntime',
    '.engine': 'tensorrt',
    '.plan': 'tensorrt',
    '.pth': 'pytorch',
    '.pt': 'pytorch',
}
#: an image as the API takes it: a file path, or a decoded ``HxWx3`` uint8 BGR array
Image = str | os.PathLike | np.ndarray


@dataclass(frozen=True)
class Detections:
    """The detections of one image, in its pixel coordinates, best first.

    Attributes:
        boxes: ``[N, 4]`` float32 ``x1, y1, x2, y2``.
        scores: ``[N]`` float32.
        labels: ``[N]`` int64, index into ``class_names``.
        class_names: every class of the model.
        masks: ``[N, H, W]`` bool at the image size (instance segmentation), else ``None``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.class_names[int(i)] for i in self.labels]

    def above(self, score_thr: float) -> Detections:
        """Only the detections scoring above ``score_thr``."""
        keep = self.scores > score_thr
        masks = None if self.masks is None else self.masks[keep]
        return Detections(
            self.boxes[keep], self.scores[keep], self.labels[keep], self.class_names, masks
        )

    def as_result(self) -> DetectionResult:
        """The project's evaluation / drawing structure."""
        return DetectionResult(self.boxes, self.scores, self.labels, self.masks)


class Detector:
    """A detector loaded once on one backend; call it on images.

    Args:
        model: a checkpoint (``.pth``, with ``config``), an exported ``.onnx`` file or a
            TensorRT ``.engine``.
        config: the model's config (a path). Needed for checkpoints; for exported files it
            is checked against the file's model spec (``None``: the file's own settings).
        backend: ``pytorch``, ``onnxruntime``, ``openvino`` (runs the ``.onnx`` file),
            ``tensorrt``; default from the suffix of ``model``.
        precision: ``openvino`` only: ``fp32``, ``bf16`` or ``int8``; default the file's.
        device: ``cpu``, ``cuda``, ``cuda:N``.
        batch_size: a list of images runs in batches of up to this many (1: each image alone,
            as ``tools/test.py`` runs by default).
        cfg_options: config overrides, as ``--cfg-options`` takes them.
        strict: checkpoint keys must match the model.
        logger: where notes (e.g. a different resize) go; ``None``: nowhere.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        config: str | os.PathLike | None = None,
        *,
        backend: str | None = None,
        precision: str | None = None,
        device: str = 'cpu',
        batch_size: int = 1,
        cfg_options: dict | None = None,
        num_threads: int | None = None,
        strict: bool = True,
        logger=print,
    ) -> None:
        from .apis.checks import check_input_file

        self.model_file = Path(model)
        self.backend_name = backend or backend_of(self.model_file)
        check_input_file(self.model_file, 'model file')
        if batch_size < 1:
            raise ConfigError(f'batch_size must be at least 1, got {batch_size}')
        self.logger = logger or (lambda _line: None)
        self.cfg = self._config(config, cfg_options)
        self.backend = self._load(precision, device, num_threads, strict)
        self.plan = self._plan()
        self.pipeline = self.plan.pipeline()
        self.batch_size = min(batch_size, self.plan.max_batch or batch_size)

    def _load(self, precision, device, num_threads, strict):
        """The one backend session of this detector. Every backend but PyTorch comes from
        :func:`~deploy.backends.build_backend`: a backend added there (Triton) is served here;
        one whose model is not a local file also needs its name let through ``__init__``'s
        file check."""
        if self.backend_name == 'pytorch':  # built here so its loading notes go to our logger
            import torch

            from .backends.pytorch import PyTorchBackend
            from .models.loading import init_detector

            if precision is not None:
                raise ConfigError('pytorch runs in fp32: export the model for another precision')
            if num_threads:
                torch.set_num_threads(num_threads)
            model, _ = init_detector(
                self.cfg, self.model_file, device=device, strict=strict, logger=self.logger
            )
            return PyTorchBackend(model, device=device)
        extra = {} if precision is None else dict(precision=precision)
        return build_backend(
            self.backend_name,
            self.model_file,
            cfg=self.cfg,
            device=device,
            num_threads=num_threads,
            strict=strict,
            **extra,
        )

    def _config(self, config, cfg_options):
        if config is None:
            if self.backend_name == 'pytorch':
                raise ConfigError(f'{self.model_file} is a checkpoint: give its config too')
            return None
        from .apis.checks import check_input_file
        from .config import load_config

        check_input_file(config, 'config')
        return load_config(config, cfg_options)

    def _plan(self):
        from .apis.contract import RunPlan, plan_run

        spec = self.backend.spec
        if spec is not None and spec.task not in ('detection', 'instance-segmentation'):
            raise ConfigError(f'{self.model_file} is a {spec.task} model: Detector runs detectors')
        if self.cfg is not None:
            return plan_run(self.backend, self.cfg, self.model_file, self.logger)
        if spec is None or spec.skip_postprocess:
            raise ConfigError(f'{self.model_file} carries no model spec: give its config')
        fixed = None if spec.inputs.dynamic else spec.inputs.static_shape
        return RunPlan(spec, None, spec.preprocess, fixed)

    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.plan.spec.class_names
        return tuple(names) if names else tuple(str(i) for i in range(self.plan.spec.num_classes))

    def __call__(self, images: Image | Sequence[Image]) -> Detections | list[Detections]:
        """The detections of one image, or a list of them for a list of images."""
        if isinstance(images, (str, os.PathLike, np.ndarray)):
            return self._run([images])[0]
        images = list(images)
        found: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            found += self._run(images[start : start + self.batch_size])
        return found

    def _run(self, images: list[Image]) -> list[Detections]:
        from .datasets.pipeline import collate, network_inputs
        from .postprocess import outputs_to_results

        batch, metas = collate([self.pipeline(image) for image in images])
        outputs = self.backend(network_inputs(batch, metas))
        results = outputs_to_results(outputs, metas, self.plan.result_filter, mask_format='bitmap')
        names = self.class_names
        return [Detections(r.boxes, r.scores, r.labels, names, r.masks) for r in results]

    def draw(self, image: Image, detections: Detections, score_thr: float = 0.3) -> np.ndarray:
        """A copy of ``image`` (BGR) with the detections above ``score_thr`` drawn on it."""
        from .datasets.pipeline import load_image
        from .visualization import draw_detections

        if not isinstance(image, np.ndarray):
            image = load_image(image)
        return draw_detections(image, detections.as_result(), self.class_names, score_thr)


def backend_of(model_file: Path) -> str:
    """The backend of a model file, from its suffix."""
    backend = BACKEND_OF_SUFFIX.get(model_file.suffix.lower())
    if backend is None:
        known = ', '.join(BACKEND_OF_SUFFIX)
        raise ConfigError(
            f'cannot tell the backend of {model_file} (suffix {model_file.suffix!r}, known: '
            f'{known}): name it (one of {", ".join(BACKENDS)})'
        )
    return backend
