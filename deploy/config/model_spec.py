"""Config -> :class:`~deploy.spec.ModelSpec`: the one reader of a model's test-time settings."""

from __future__ import annotations

from collections.abc import Mapping

from mmengine.config import Config

from ..errors import ConfigError
from ..spec import ModelSpec, TestSettings, registry_type_name, test_settings_for_model
from .classification import CLASSIFIER_TYPES
from .loader import get_model_cfg, get_preprocess_cfg
from .reading import cfg_file, missing_key_error

__all__ = ['get_test_settings', 'model_num_classes', 'spec_from_config']


def get_test_settings(cfg: Config) -> TestSettings:
    """The model's typed test-time settings (score threshold, NMS, ...).

    Read from ``model.test_cfg``; very old 2.x configs kept it at the top level, which is used as
    a fallback, but never a 3.x loop config (``test_cfg=dict(type='TestLoop')``). Every key is
    checked: an unknown one is an error that names the closest known key.
    """
    model = get_model_cfg(cfg)
    test_cfg, where = model.get('test_cfg'), 'model.test_cfg'
    if not isinstance(test_cfg, Mapping):
        top = cfg.get('test_cfg')
        if isinstance(top, Mapping) and 'type' not in top:
            test_cfg, where = top, 'test_cfg'
        elif _is_detector(model):
            detail = (
                'the top-level `test_cfg` is a runner loop config'
                if isinstance(top, Mapping)
                else ''
            )
            raise missing_key_error('model.test_cfg', cfg, detail)
        else:
            test_cfg = None
    try:
        return test_settings_for_model(model, test_cfg, where)
    except ConfigError as err:
        raise ConfigError(f'{err} (in {cfg_file(cfg)})') from None


def _is_detector(model: Mapping) -> bool:
    """Every model but a classifier has test-time detection settings."""
    return registry_type_name(model.get('type', '')) not in CLASSIFIER_TYPES


def model_num_classes(model: Mapping) -> int:
    """The number of classes the model's (final) classification head predicts (0: unknown)."""
    head = model.get('bbox_head') or model.get('head')
    roi_head = model.get('roi_head')
    if isinstance(roi_head, Mapping):
        head = roi_head.get('bbox_head')
        if isinstance(head, (list, tuple)):  # cascade: one per stage, the last one decides
            head = head[-1]
    if isinstance(head, Mapping) and head.get('num_classes') is not None:
        return int(head['num_classes'])
    return 0


def _task(model: Mapping) -> str:
    if not _is_detector(model):
        return 'classification'
    roi_head = model.get('roi_head')
    if isinstance(roi_head, Mapping) and roi_head.get('mask_head') is not None:
        return 'instance-segmentation'
    if registry_type_name((model.get('bbox_head') or {}).get('type', '')) in MASK_LOGIT_HEADS:
        return 'instance-segmentation'
    return 'detection'


#: one-stage heads whose masks leave the graph as ``mask_logits`` over the input canvas
MASK_LOGIT_HEADS = ('RTMDetInsSepBNHead',)


def spec_from_config(cfg: Config, class_names: tuple[str, ...] | None = None) -> ModelSpec:
    """The spec of the model ``cfg`` describes (before export fills in its input rules).

    Args:
        cfg: a loaded config (``--cfg-options`` applied).
        class_names: the checkpoint's classes when known (else the config's, if it names any).
    """
    from .loader import get_class_names

    model = get_model_cfg(cfg)
    test_cfg = get_test_settings(cfg)
    task = _task(model)
    names = class_names if class_names is not None else get_class_names(cfg)
    outputs = {
        'detection': ('dets', 'labels'),
        'instance-segmentation': ('dets', 'labels', 'masks'),
        'classification': ('scores',),
    }[task]
    if registry_type_name((model.get('bbox_head') or {}).get('type', '')) in MASK_LOGIT_HEADS:
        outputs = ('dets', 'labels', 'mask_logits')
    return ModelSpec(
        model_type=registry_type_name(model.get('type', '')),
        task=task,
        class_names=tuple(names) if names else None,
        num_classes=model_num_classes(model),
        preprocess=get_preprocess_cfg(cfg),
        test_cfg=test_cfg,
        outputs=outputs,
    )
