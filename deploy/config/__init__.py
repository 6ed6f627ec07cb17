"""Config loading: MMDetection 2.x/3.x files plus our deploy keys, read through one small API."""

from .loader import (
    add_cfg_options_argument,
    get_class_names,
    get_model_cfg,
    get_preprocess_cfg,
    get_test_cfg,
    get_test_dataset_cfg,
    load_config,
    missing_key_error,
)
from .preprocess import PreprocessConfig

__all__ = [
    'PreprocessConfig',
    'add_cfg_options_argument',
    'get_class_names',
    'get_model_cfg',
    'get_preprocess_cfg',
    'get_test_cfg',
    'get_test_dataset_cfg',
    'load_config',
    'missing_key_error',
]
