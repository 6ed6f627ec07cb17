"""Config loading: MMDetection 2.x/3.x files plus our deploy keys, read through one small API."""

from ..spec import PreprocessConfig
from .loader import (
    add_cfg_options_argument,
    get_class_names,
    get_model_cfg,
    get_preprocess_cfg,
    get_test_dataset_cfg,
    load_config,
)
from .model_spec import get_test_settings, model_num_classes, spec_from_config
from .reading import missing_key_error

__all__ = [
    'PreprocessConfig',
    'add_cfg_options_argument',
    'get_class_names',
    'get_model_cfg',
    'get_preprocess_cfg',
    'get_test_dataset_cfg',
    'get_test_settings',
    'load_config',
    'missing_key_error',
    'model_num_classes',
    'spec_from_config',
]
