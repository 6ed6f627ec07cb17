"""Config + checkpoint -> a ready detector (the first step of every tool)."""

from pathlib import Path

from ..config import get_class_names, get_model_cfg, get_test_cfg, load_config
from ..models import build_detector
from ..models.checkpoint import load_checkpoint


def init_detector(
    config,
    checkpoint: str | Path | None = None,
    device: str = 'cpu',
    cfg_options=None,
    strict: bool = False,
    logger=print,
):
    """Load a config, build its detector, load the checkpoint, and put it in eval mode.

    Args:
        config: a config path or an already loaded ``mmengine.Config``.
        checkpoint: an MMDetection-format ``.pth`` (``None``: random weights, for tests).
        cfg_options: ``--cfg-options`` overrides (dict or ``key=value`` strings).
        strict: make missing / unexpected / mis-shaped checkpoint keys an error.

    Returns:
        ``(model, cfg)``; ``model.class_names`` comes from the checkpoint, else the config.
    """
    cfg = load_config(config, cfg_options) if isinstance(config, (str, Path)) else config
    model = build_detector(
        get_model_cfg(cfg), test_cfg=get_test_cfg(cfg), config_file=getattr(cfg, 'filename', None)
    )
    class_names = get_class_names(cfg)
    if checkpoint is not None:
        info = load_checkpoint(model, checkpoint, strict=strict, logger=logger)
        class_names = info.get('class_names') or class_names
    model.class_names = tuple(class_names) if class_names else None
    return model.to(device).eval(), cfg
