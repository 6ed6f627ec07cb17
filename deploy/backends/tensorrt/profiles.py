"""Optimisation profiles (min / opt / max shape per engine input) from the config and the ONNX file.

Resolution order, per input: command-line shapes > ``backend_config.input_shapes`` > defaults
derived from the ONNX file (static dims, shape rules and pre-processing of the model spec):

* static graph: every dim fixed as exported;
* dynamic graph, keep-ratio resize to ``scale=(long, short)`` padded to ``size_divisor`` ``d``:
  ``opt = [1, 3, pad(short), pad(long)]`` (a landscape image), ``max = [max_batch, 3, pad(long),
  pad(long)]`` (any orientation), ``min = [1, 3, d, d]`` (a very elongated image is resized to a
  thin strip; the graph clamps every top-k, so tiny inputs are fine);
* dynamic graph without keep-ratio: height and width fixed at the padded ``scale``.

``img_shape [B, 2]`` always follows the batch range of ``input``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ...errors import BackendError, ConfigError
from ...spec import InputSpec, ModelSpec, PreprocessConfig

#: default largest batch of an engine built from a dynamic ONNX file
DEFAULT_MAX_BATCH = 2
#: default workspace memory-pool limit (bytes)
DEFAULT_WORKSPACE = 1 << 30


@dataclass(frozen=True)
class ShapeRange:
    """min / opt / max shape of one input (lists of ints)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, shape) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max)
        )

    def as_dict(self) -> dict:
        return dict(min=list(self.min), opt=list(self.opt), max=list(self.max))


def _pad(size: int, divisor: int | None) -> int:
    divisor = divisor or 1
    return -(-int(size) // divisor) * divisor


def graph_input_dims(model) -> dict[str, list[int | None]]:
    """``name -> dims`` of the ONNX graph inputs (``None`` for a dynamic dim)."""
    initializers = {i.name for i in model.graph.initializer}
    return {
        v.name: [
            d.dim_value if d.HasField('dim_value') else None for d in v.type.tensor_type.shape.dim
        ]
        for v in model.graph.input
        if v.name not in initializers
    }


def default_image_range(
    dims: list[int | None], spec: ModelSpec | None, max_batch: int = DEFAULT_MAX_BATCH
) -> ShapeRange:
    """Default range of ``input [B, 3, H, W]`` (see the module docstring)."""
    if len(dims) != 4:
        raise BackendError(f'expected a [B, 3, H, W] image input, the graph has {len(dims)} dims')
    pre = spec.preprocess if spec is not None else PreprocessConfig()
    inputs = spec.inputs if spec is not None else InputSpec(dynamic=True, dynamic_size=True)
    divisor = inputs.size_divisor or pre.size_divisor or 32
    scale = pre.scale
    if pre.keep_ratio:
        long_side, short_side = max(scale), min(scale)
        opt_hw = (_pad(short_side, divisor), _pad(long_side, divisor))
        max_hw = (_pad(long_side, divisor),) * 2
        min_hw = (divisor, divisor)
    else:  # fixed (w, h) resize
        fixed = (_pad(scale[1], divisor), _pad(scale[0], divisor))
        opt_hw = max_hw = min_hw = fixed
    if inputs.static_shape and not inputs.dynamic_size:
        opt_hw = max_hw = min_hw = tuple(inputs.static_shape)
    lo = [1, dims[1] or 3, *min_hw]
    opt = [1, dims[1] or 3, *opt_hw]
    hi = [max_batch, dims[1] or 3, *max_hw]
    for axis, dim in enumerate(dims):  # exported static dims win
        if dim is not None:
            lo[axis] = opt[axis] = hi[axis] = dim
    return ShapeRange(tuple(lo), tuple(opt), tuple(hi))


def resolve_profiles(
    model,
    spec: ModelSpec | None = None,
    backend_config: Mapping | None = None,
    overrides: Mapping | None = None,
    max_batch: int | None = None,
) -> dict[str, ShapeRange]:
    """The optimisation profile of every graph input.

    Args:
        model: the ``onnx.ModelProto`` (only its input dims are read).
        spec: the file's :class:`~deploy.spec.ModelSpec` (None: a foreign file).
        backend_config: the config's ``backend_config`` (its ``input_shapes``).
        overrides: ``{name: dict(min_shape=..., opt_shape=..., max_shape=...)}`` from the command
            line; any subset of the three keys.
        max_batch: largest batch for the default range (default :data:`DEFAULT_MAX_BATCH`).
    """
    dims = graph_input_dims(model)
    configured = dict((backend_config or {}).get('input_shapes') or {})
    for name, shapes in (overrides or {}).items():
        given = {k: v for k, v in shapes.items() if v is not None}
        merged = dict(configured.get(name) or {})
        if given and 'opt_shape' not in given:
            merged.pop('opt_shape', None)  # re-derived inside the new range
        merged.update(given)
        configured[name] = merged
    unknown = sorted(set(configured) - set(dims))
    if unknown:
        raise ConfigError(
            f'backend_config.input_shapes names {", ".join(map(repr, unknown))}, but the model '
            f'inputs are {", ".join(map(repr, dims))}'
        )
    profiles: dict[str, ShapeRange] = {}
    image_name = next((n for n, d in dims.items() if len(d) == 4), None)
    if image_name is not None:
        default = default_image_range(dims[image_name], spec, max_batch or DEFAULT_MAX_BATCH)
        profiles[image_name] = _merge(
            image_name, dims[image_name], configured.get(image_name), default
        )
    for name, d in dims.items():
        if name == image_name:
            continue
        if image_name is not None and len(d) == 2:
            # img_shape [B, 2]: its batch range is the image's.
            image = profiles[image_name]
            default = ShapeRange((image.min[0], 2), (image.opt[0], 2), (image.max[0], 2))
        elif all(x is not None for x in d):
            default = ShapeRange(tuple(d), tuple(d), tuple(d))
        else:
            default = None
        profiles[name] = _merge(name, d, configured.get(name), default)
    if image_name is not None:
        _check_batches(profiles, image_name)
    return profiles


def _merge(name: str, dims, spec: Mapping | None, default: ShapeRange | None) -> ShapeRange:
    spec = dict(spec or {})
    bad = sorted(set(spec) - {'min_shape', 'opt_shape', 'max_shape'})
    if bad:
        raise ConfigError(
            f'input_shapes.{name}: unknown keys {bad}; use min_shape, opt_shape, max_shape'
        )
    values = {}
    for key, fallback in (('min_shape', 'min'), ('opt_shape', 'opt'), ('max_shape', 'max')):
        value = spec.get(key)
        if value is None:
            if default is None:
                raise ConfigError(
                    f'input {name!r} has dynamic dims {dims}: give its {key} in '
                    'backend_config.input_shapes'
                )
            value = getattr(default, fallback)
        values[fallback] = tuple(int(v) for v in value)
    # A range given only partly: opt defaults into [min, max].
    if 'opt_shape' not in spec and ('min_shape' in spec or 'max_shape' in spec):
        values['opt'] = tuple(
            min(max(o, lo), hi) for o, lo, hi in zip(values['opt'], values['min'], values['max'])
        )
    shape_range = ShapeRange(values['min'], values['opt'], values['max'])
    validate_range(name, dims, shape_range)
    return shape_range


def validate_range(name: str, dims, shape_range: ShapeRange) -> None:
    """Rank, static dims and ``min <= opt <= max`` for one input, as :class:`ConfigError`."""
    for label, shape in (
        ('min', shape_range.min),
        ('opt', shape_range.opt),
        ('max', shape_range.max),
    ):
        if len(shape) != len(dims):
            raise ConfigError(
                f'{label} shape {list(shape)} of input {name!r} has {len(shape)} '
                f'dims, the model input has {len(dims)}'
            )
        for axis, (s, d) in enumerate(zip(shape, dims)):
            if d is not None and s != d:
                raise ConfigError(
                    f'{label} shape {list(shape)} of input {name!r}: axis {axis} '
                    f'is fixed to {d} in the model'
                )
            if s < 1:
                raise ConfigError(f'{label} shape {list(shape)} of input {name!r} has a dim < 1')
    if not all(
        lo <= o <= hi for lo, o, hi in zip(shape_range.min, shape_range.opt, shape_range.max)
    ):
        raise ConfigError(
            f'input {name!r}: need min <= opt <= max per dim, got min '
            f'{list(shape_range.min)} opt {list(shape_range.opt)} max '
            f'{list(shape_range.max)}'
        )


def _check_batches(profiles: dict[str, ShapeRange], image_name: str) -> None:
    image = profiles[image_name]
    for name, other in profiles.items():
        if name != image_name and len(other.min) == 2:
            if (other.min[0], other.opt[0], other.max[0]) != (
                image.min[0],
                image.opt[0],
                image.max[0],
            ):
                raise ConfigError(
                    f'the batch range of {name!r} must equal that of '
                    f'{image_name!r} ({image.min[0]}..{image.max[0]})'
                )


def shape_from_cli(values: list[int] | None, name: str = 'input') -> list[int] | None:
    """``--min-shape`` etc.: ``H W`` (batch 1, 3 channels) or ``B 3 H W``."""
    if values is None:
        return None
    if len(values) == 1:
        return [1, 3, values[0], values[0]]
    if len(values) == 2:
        return [1, 3, *values]
    if len(values) == 4:
        return list(values)
    raise ConfigError(f'a shape of {name!r} is H W or B 3 H W, got {values}')


def check_input_shapes(inputs: Mapping, profiles: Mapping[str, ShapeRange]) -> None:
    """Raise :class:`BackendError` naming the first input whose shape is outside its profile."""
    for name, shape_range in profiles.items():
        if name not in inputs:
            raise BackendError(f'the engine needs input {name!r}, which was not given')
        shape = tuple(int(s) for s in inputs[name].shape)
        if not shape_range.contains(shape):
            raise BackendError(
                f'input {name!r} has shape {list(shape)}, outside the engine profile (min '
                f'{list(shape_range.min)}, max {list(shape_range.max)}); rebuild the engine with '
                'a wider backend_config.input_shapes / --min-shape / --max-shape'
            )
