"""Build a detector from a config's ``model`` dict through the one registry."""

import re

from mmengine.config import ConfigDict

from ..errors import ConfigError
from ..registry import MODELS


def build_detector(model_cfg: dict, test_cfg: dict | None = None, config_file: str | None = None):
    """Build ``model_cfg`` (MMDetection type names) in eval mode.

    Args:
        model_cfg: the config's ``model`` dict.
        test_cfg: the model test config when it lives outside ``model`` (old 2.x files).
        config_file: named in errors.

    Raises:
        ConfigError: an unknown ``type`` or a bad argument, naming the type and the file.
    """
    cfg = ConfigDict(model_cfg)
    if test_cfg is not None and cfg.get('test_cfg') is None:
        cfg.test_cfg = test_cfg
    where = f' (config {config_file})' if config_file else ''
    try:
        model = MODELS.build(cfg)
    except KeyError as err:
        match = re.search(r'(\S+) is not in the \S*model registry', str(err))
        name = match.group(1) if match else str(err)
        raise ConfigError(
            f'unknown model type {name}{where}: not in the registry '
            f'(known types include {", ".join(sorted(MODELS.module_dict)[:8])}, ...)'
        ) from None
    except TypeError as err:
        raise ConfigError(f'bad model config{where}: {err}') from None
    return model.eval()
