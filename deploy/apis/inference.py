"""Single-image inference on any backend (the demo's engine)."""

from pathlib import Path

import numpy as np

from ..backends import build_backend
from ..config import get_preprocess_cfg, load_config
from ..datasets.pipeline import TestPipeline, collate, load_image
from ..export.metadata import read_metadata
from ..postprocess import outputs_to_results
from ..structures import DetectionResult
from .test import input_shape_rule


def inference_image(
    config, model_file, img_path, backend: str = 'pytorch', *, cfg_options=None, device: str = 'cpu'
) -> tuple[np.ndarray, DetectionResult, tuple | None]:
    """Run one image; returns ``(BGR image, result in image coordinates, class names)``."""
    cfg = load_config(config, cfg_options) if isinstance(config, (str, Path)) else config
    runner = build_backend(backend, model_file, cfg=cfg, device=device)
    pipeline = TestPipeline(
        get_preprocess_cfg(cfg), fixed_shape=input_shape_rule(model_file, backend)
    )
    image = load_image(img_path)
    img, metas = collate([pipeline(image)])
    inputs = dict(
        input=img.numpy(), img_shape=np.asarray([m['img_shape'][:2] for m in metas], np.float32)
    )
    result = outputs_to_results(runner(inputs), metas)[0]
    class_names = getattr(getattr(runner, 'model', None), 'class_names', None)
    if class_names is None and str(model_file).endswith('.onnx'):
        class_names = read_metadata(model_file).get('class_names')
    return image, result, class_names
