"""Build a detector from a config's ``model`` dict through the one registry."""

import re
from collections.abc import Mapping

from mmengine.config import ConfigDict

from ..errors import ConfigError
from ..registry import MODELS
from ..spec import TestSettings

#: registry scopes of OpenMMLab 3.x configs (``type='mmdet.RetinaNet'``): one registry here
_SCOPES = ('mmdet', 'mmcv', 'mmengine', 'mmpretrain', 'mmcls')


def strip_scopes(cfg):
    """A copy of ``cfg`` with ``mmdet.``-style scope prefixes removed from every ``type``."""
    if isinstance(cfg, Mapping):
        out = {k: strip_scopes(v) for k, v in cfg.items()}
        type_ = out.get('type')
        if isinstance(type_, str) and '.' in type_ and type_.split('.', 1)[0] in _SCOPES:
            out['type'] = type_.split('.', 1)[1]
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(strip_scopes(v) for v in cfg)
    return cfg


def build_detector(
    model_cfg: dict, test_settings: TestSettings | None = None, config_file: str | None = None
):
    """Build ``model_cfg`` (MMDetection type names, ``mmdet.`` scopes allowed) in eval mode.

    Args:
        model_cfg: the config's ``model`` dict.
        test_settings: the model's typed test-time settings (``deploy.config.get_test_settings``);
            ``None`` parses ``model_cfg['test_cfg']``.
        config_file: named in errors.

    Raises:
        ConfigError: an unknown ``type`` or a bad argument, naming the type and the file.
    """
    cfg = ConfigDict(strip_scopes(model_cfg))
    if test_settings is not None:
        cfg.test_cfg = test_settings
    where = f' (config {config_file})' if config_file else ''
    try:
        model = MODELS.build(cfg)
    except KeyError as err:
        match = re.search(r'(\S+) is not in the \S*model registry', str(err))
        name = match.group(1) if match else str(err)
        name = name.strip('\'"`')
        raise ConfigError(
            f'unknown model type `{name}`{where}: not in the registry '
            f'(known types include {", ".join(sorted(MODELS.module_dict)[:8])}, ...)'
        ) from None
    except TypeError as err:
        raise ConfigError(f'bad model config{where}: {err}') from None
    return model.eval()
