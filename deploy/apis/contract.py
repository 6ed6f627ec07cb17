"""A model file's contract against the run's config: what can be honoured, and how.

Every tool that runs a model file (``test.py``, the demo, the benchmark) goes through
:func:`plan_run`: the file's :class:`~deploy.spec.ModelSpec` is the truth about the graph, and the
config (after ``--cfg-options``) says what the user wants. Settings that can be applied exactly
after the graph are; any other difference stops the run with one line naming the setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmengine.config import Config

from ..backends.base import Backend
from ..config import get_preprocess_cfg, spec_from_config
from ..datasets.pipeline import DecodedImagePipeline
from ..errors import ConfigError
from ..spec import ModelSpec, PreprocessConfig, ResultFilter, reconcile_settings
from ..tasks import task_of_spec
from ..tasks.base import Logger, PathLike

#: pre-processing fields that must equal the exported ones (the scale may differ: it is a
#: pipeline choice, and a dynamic graph takes any size)
_FIXED_PREPROCESS = (
    'mean',
    'std',
    'to_rgb',
    'keep_ratio',
    'size_divisor',
    'pad_value',
    'to_float32',
    'center_pad',  # the graph derives each image's offset inside the input from it
    'pad_to_square',
    'pad_to_size_value',  # the canvas the network saw around the image
)


@dataclass(frozen=True)
class RunPlan:
    """How to feed a model file and read its outputs in this run.

    Attributes:
        spec: the file's contract.
        result_filter: applied to the outputs by the shared post-processing.
        preprocess: the run's pre-processing (the config's; checked against the file's).
        fixed_shape: ``(h, w)`` every input is fitted and padded to (static graphs), or None.
    """

    spec: ModelSpec
    result_filter: ResultFilter
    preprocess: PreprocessConfig
    fixed_shape: tuple[int, int] | None

    @property
    def decoded_images(self) -> bool:
        """The graph takes decoded uint8 images and pre-processes them itself."""
        return self.spec.inputs.layout == 'bgr_uint8'

    @property
    def max_batch(self) -> int | None:
        """1 for graphs exported with a static batch and for decoded images (whose sizes differ
        from image to image), else None (any)."""
        return None if self.spec.inputs.dynamic and not self.decoded_images else 1

    def pipeline(self):
        """What turns an image file into the graph's input."""
        if self.decoded_images:
            return DecodedImagePipeline()
        return task_of_spec(self.spec).pipeline(self.preprocess, self.fixed_shape)


def plan_run(
    runner: Backend, cfg: Config | None, model_file: PathLike, logger: Logger = print
) -> RunPlan:
    """Check ``runner``'s model against ``cfg`` and say how to run it (``cfg`` None: as the
    model file's own spec says, without any config).

    Raises:
        ConfigError: the file has no spec, describes another model or pre-processing, or a
            setting differs in a way that cannot be applied after the graph.
    """
    spec = runner.spec
    if spec is None:
        raise ConfigError(
            f'{model_file} carries no model spec (it was not exported by tools/pytorch2onnx.py): '
            'export it with tools/pytorch2onnx.py'
        )
    if spec.skip_postprocess:
        raise ConfigError(
            f'{model_file} holds raw head outputs (--skip-postprocess): export it with '
            'post-processing to run it'
        )
    if cfg is None:  # the file alone: its own pre-processing and settings, no config code run
        fixed_shape = None if spec.inputs.dynamic else spec.inputs.static_shape
        result_filter = reconcile_settings(spec, spec.test_cfg, str(model_file))
        return RunPlan(spec, result_filter, spec.preprocess, fixed_shape)
    wanted = spec_from_config(cfg)
    if wanted.model_type != spec.model_type:
        raise ConfigError(
            f'{model_file} is a {spec.model_type}, but the config describes a '
            f'{wanted.model_type}: use the config it was exported from'
        )
    preprocess = get_preprocess_cfg(cfg)
    for name in _FIXED_PREPROCESS:
        have, want = getattr(spec.preprocess, name), getattr(preprocess, name)
        if have != want:
            raise ConfigError(
                f'the config pre-processes images differently from {model_file} ({name}: '
                f'{want} in the config, {have} in the file): use the config it was exported from'
            )
    fixed_shape = None if spec.inputs.dynamic else spec.inputs.static_shape
    if preprocess.scale != spec.preprocess.scale and fixed_shape is not None:
        logger(
            f'note: {model_file} has a static {fixed_shape[0]}x{fixed_shape[1]} input: every '
            f"image is fitted into it; the config's scale {preprocess.scale} does not apply"
        )
    elif preprocess.scale != spec.preprocess.scale:
        logger(
            f'note: resizing to {preprocess.scale} (the config), {model_file} was exported with '
            f'{spec.preprocess.scale}'
        )
    result_filter = reconcile_settings(spec, wanted.test_cfg, str(model_file))
    return RunPlan(spec, result_filter, preprocess, fixed_shape)
