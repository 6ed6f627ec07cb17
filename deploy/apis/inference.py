"""Single-image inference on any backend (the demo's engine)."""

from pathlib import Path

import numpy as np
from mmengine.config import Config

from ..backends import build_backend
from ..config import load_config
from ..datasets.pipeline import collate, load_image, network_inputs
from ..errors import ConfigError
from ..finite import check_outputs_finite
from ..structures import ClassificationResult, DetectionResult
from ..tasks import task_of_spec
from ..tasks.base import Logger, PathLike
from .contract import plan_run


def inference_image(
    config: PathLike | Config,
    model_file: PathLike,
    img_path: PathLike,
    backend: str = 'pytorch',
    *,
    cfg_options: dict | None = None,
    device: str = 'cpu',
    strict: bool = True,
    precision: str | None = None,
    logger: Logger = print,
) -> tuple[np.ndarray, DetectionResult | ClassificationResult, tuple | None]:
    """Run one image; returns ``(BGR image, result in image coordinates, class names)`` (a
    classifier's result: its class scores). ``precision``: for backends that choose it at load
    (``openvino``); ``None``: the file's."""
    cfg = load_config(config, cfg_options) if isinstance(config, (str, Path)) else config
    if cfg is None and backend == 'pytorch':
        raise ConfigError('the pytorch backend needs the config to build the model')
    image = load_image(img_path)  # a bad image is reported before the model is loaded
    extra = {} if precision is None else dict(precision=precision)
    runner = build_backend(backend, model_file, cfg=cfg, device=device, strict=strict, **extra)
    plan = plan_run(runner, cfg, model_file, logger)
    img, metas = collate([plan.pipeline()(image)])
    outputs = runner(network_inputs(img, metas))
    check_outputs_finite(outputs, f'{model_file} ({backend})')
    result = task_of_spec(plan.spec).image_result(outputs, metas, plan.result_filter)
    return image, result, plan.spec.class_names
