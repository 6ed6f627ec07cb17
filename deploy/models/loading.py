"""Config + checkpoint -> a ready model, with its :class:`~deploy.spec.ModelSpec`."""

from pathlib import Path

from ..config import get_class_names, get_model_cfg, get_test_settings, load_config
from ..config.model_spec import spec_from_config
from ..errors import CheckpointError
from ..spec import InputSpec
from .builder import build_detector
from .checkpoint import load_checkpoint


def init_detector(
    config,
    checkpoint: str | Path | None = None,
    device: str = 'cpu',
    cfg_options=None,
    strict: bool = True,
    logger=print,
):
    """Load a config, build its model, load the checkpoint, and put it in eval mode.

    Args:
        config: a config path or an already loaded ``mmengine.Config``.
        checkpoint: an MMDetection-format ``.pth`` (``None``: random weights, for tests).
        cfg_options: ``--cfg-options`` overrides (dict or ``key=value`` strings).
        strict: missing / unexpected / mis-shaped checkpoint keys are an error (the default in
            every tool; ``--allow-key-mismatch`` turns it off, and they are still reported).

    Returns:
        ``(model, cfg)``. ``model.class_names`` comes from the checkpoint, else the config;
        ``model.spec`` is the model's :class:`~deploy.spec.ModelSpec`.

    Raises:
        CheckpointError: the checkpoint does not fit the model (keys, or a class list whose
            length differs from the head's number of classes).
    """
    cfg = load_config(config, cfg_options) if isinstance(config, (str, Path)) else config
    model = build_detector(
        get_model_cfg(cfg), get_test_settings(cfg), config_file=getattr(cfg, 'filename', None)
    )
    class_names = get_class_names(cfg)
    if checkpoint is not None:
        info = load_checkpoint(model, checkpoint, strict=strict, logger=logger)
        class_names = info.get('class_names') or class_names
    spec = spec_from_config(cfg, class_names)
    if class_names and spec.num_classes and len(class_names) != spec.num_classes:
        source = f'checkpoint {checkpoint}' if checkpoint is not None else 'the config'
        raise CheckpointError(
            f'{source} names {len(class_names)} classes, but the model head predicts '
            f'{spec.num_classes}: set num_classes={len(class_names)} in the config, or use the '
            'checkpoint made for it'
        )
    model.class_names = tuple(class_names) if class_names else None
    model.spec = spec.replace(
        # The eager model takes any batch and (where the pipeline keeps the ratio) any size.
        inputs=InputSpec(
            names=tuple(getattr(model, 'input_names', InputSpec.names)),
            dynamic=True,
            dynamic_size=spec.preprocess.keep_ratio,
            size_divisor=spec.preprocess.size_divisor,
        ),
        outputs=tuple(model.output_names),
        threshold_on_output_score=model.threshold_on_output_score,
    )
    return model.to(device).eval(), cfg
