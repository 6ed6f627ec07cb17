"""Trace a detector into an ONNX file with either exporter.

Two exporters are supported because each has failure modes the other lacks:

* ``dynamo`` (default): ``torch.onnx.export(dynamo=True)``, torch.export-based, the future of
  ``torch.onnx``. Dynamic dims are declared with ``dynamic_shapes``; our custom op is translated by
  an onnxscript function.
* ``torchscript``: the legacy tracer (``dynamo=False``), deprecated but still shipped, with
  ``dynamic_axes`` and a symbolic function for the custom op.

Both produce the same graph contract: inputs ``input [B, 3, H, W]`` and ``img_shape [B, 2]``
(classifiers: ``input`` alone), outputs named by the model (``dets``, ``labels``, ...;
classifiers ``scores``). Files are written to a temporary name and renamed when complete, so a
failed export never leaves a partial file behind.
"""

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from ..errors import ExportError
from ..fileio import commit, discard, staging_path
from ..ops.preprocess import preprocess_image
from ..spec import InputSpec, ModelSpec, PreprocessConfig, write_onnx_spec
from . import onnx_ops
from .options import DEFAULT_EXPORTER, DEFAULT_OPSET, EXPORTERS, MIN_OPSET  # noqa: F401

# The dynamo exporter warns once per export that torchvision's ops cannot be registered; we never
# use torchvision (our ops are our own), so the warning is noise.
logging.getLogger('torch.onnx._internal.exporter._registration').setLevel(logging.ERROR)
# Its optimizer warns for every constant Split it leaves unfolded (attention's packed q/k/v
# weights); ONNX Runtime folds those at load, so the warning is noise too.
logging.getLogger('onnxscript.optimizer._constant_folding').setLevel(logging.ERROR)


class DeployModule(nn.Module):
    """``(input, img_shape) -> outputs``: the post-processed graph of a detector."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, input: Tensor, img_shape: Tensor) -> tuple[Tensor, ...]:  # noqa: A002
        return tuple(self.detector.forward_deploy(input, img_shape))


class ImageModule(nn.Module):
    """``image [B, H, W, 3] uint8 BGR -> outputs`` with boxes in image pixels: the test
    pipeline's resize / normalise / pad in the graph (``--preprocess-in-graph``)."""

    def __init__(self, detector: nn.Module, preprocess: PreprocessConfig):
        super().__init__()
        unsupported = [
            name
            for name, used in (
                ('resize by a scale factor', preprocess.resize_factor is not None),
                ('to_float32 loading', preprocess.to_float32),
                ('RandomCenterCropPad', preprocess.center_pad is not None),
                ('Pad(pad_to_square=True)', preprocess.pad_to_square),
                ('Pad(size=...)', preprocess.pad_to_size is not None),
            )
            if used
        ]
        if unsupported:
            raise ExportError(
                f'--preprocess-in-graph does resize to a scale, normalise and pad; this '
                f'pipeline also has {", ".join(unsupported)}: export without '
                '--preprocess-in-graph'
            )
        self.detector = detector
        self.preprocess = preprocess

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        cfg = self.preprocess
        inputs, img_shape, scale = preprocess_image(
            image,
            cfg.scale,
            cfg.keep_ratio,
            cfg.size_divisor,
            cfg.pad_value,
            cfg.mean,
            cfg.std,
            cfg.to_rgb,
        )
        dets, *rest = self.detector.forward_deploy(inputs, img_shape)
        # Network-input pixels -> image pixels (padding rows are zero and stay zero).
        factors = torch.cat([scale, scale], dim=1).unsqueeze(1)  # [B, 1, 4] (w, h, w, h)
        dets = torch.cat([dets[..., :4] / factors, dets[..., 4:]], dim=-1)
        return (dets, *rest)


class InputOnlyModule(nn.Module):
    """``input -> outputs``: the post-processed graph of a model that needs no image shape
    (classifiers, whose ``input_names`` are ``('input',)``)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, input: Tensor) -> tuple[Tensor, ...]:  # noqa: A002
        return tuple(self.detector.forward_deploy(input))


class RawModule(nn.Module):
    """``input -> raw head tensors``: the ``--skip-postprocess`` graph."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, input: Tensor) -> tuple[Tensor, ...]:  # noqa: A002
        return tuple(self.detector.forward_raw(input).values())


def export_onnx(
    detector: nn.Module,
    img: Tensor,
    img_shape: Tensor,
    output_file: str | Path,
    *,
    exporter: str = DEFAULT_EXPORTER,
    opset_version: int = DEFAULT_OPSET,
    dynamic: bool = False,
    dynamic_size: bool = True,
    skip_postprocess: bool = False,
    spec: ModelSpec | None = None,
    preprocess_in_graph: PreprocessConfig | None = None,
    verbose: bool = False,
) -> dict:
    """Export ``detector`` to ``output_file``.

    Args:
        detector: a zoo detector in eval mode.
        img: example input ``[B, 3, H, W]``; use B >= 2 for dynamic export (torch.export treats
            sizes 0 and 1 as static).
        img_shape: example ``[B, 2]`` float ``(h, w)`` of the real images.
        exporter: ``'dynamo'`` or ``'torchscript'``.
        opset_version: ONNX opset (>= 16).
        dynamic: make batch, height, width and the detection axis dynamic.
        dynamic_size: with ``dynamic``, whether height and width are dynamic too. Models whose
            test pipeline resizes every image to one size (SSD) keep ``H, W`` static: their
            backbones only work at that size, and nothing is gained by pretending otherwise.
        skip_postprocess: export raw head outputs only (input ``input`` only).
        preprocess_in_graph: take ``image [B, H, W, 3]`` uint8 BGR (``img`` is then that example
            batch and ``img_shape`` is ignored) and run this pre-processing in the graph; boxes
            come out in image pixels.
        spec: the model's contract, stored in the file (:func:`deploy.spec.write_onnx_spec`);
            input/output names, shape rules, opset and exporter are filled in here. Default:
            the detector's own ``spec`` (set by ``init_detector``).

    Returns:
        ``dict(input_names, output_names, dynamic_axes)``.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f'unknown exporter {exporter!r}; choose one of {", ".join(EXPORTERS)}')
    if opset_version < MIN_OPSET:
        raise ExportError(
            f'opset {opset_version} is too low: the exported ops need opset >= '
            f'{MIN_OPSET} (RoiAlign coordinate_transformation_mode, NonMaxSuppression '
            'semantics); use --opset-version 18'
        )
    if dynamic and img.shape[0] < 2:
        raise ExportError('dynamic export needs an example batch of at least 2 images')
    detector = detector.eval()
    if spec is None:
        spec = getattr(detector, 'spec', None)
    if dynamic and dynamic_size and preprocess_in_graph is None:
        img, img_shape = _smaller_example(detector, img, img_shape)
    with torch.no_grad():
        # The wrappers are made in eval mode: the TorchScript exporter puts the module it is given
        # back into that module's mode afterwards, recursively, and a new module is in training
        # mode (which would leave e.g. DETR's dropout on in the eager model).
        if skip_postprocess:
            module, args = RawModule(detector).eval(), (img,)
            input_names = ['input']
            output_names = list(detector.forward_raw(img).keys())
        elif preprocess_in_graph is not None:
            module, args = ImageModule(detector, preprocess_in_graph), (img,)
            input_names = ['image']
            output_names = list(detector.output_names)
        else:
            input_names = list(getattr(detector, 'input_names', ('input', 'img_shape')))
            if input_names == ['input']:
                module, args = InputOnlyModule(detector), (img,)
            else:
                module, args = DeployModule(detector), (img, img_shape)
            output_names = list(detector.output_names)
        # A new wrapper is in training mode, and the TorchScript exporter restores the mode it
        # found after tracing, recursively: the detector would be left training (BatchNorm on
        # batch statistics) for everything that runs after the export.
        module.eval()
        output_shapes = _output_shapes(module, args, output_names, shape_free=dynamic_size)
    dynamic_axes = (
        _dynamic_axes(input_names, output_names, skip_postprocess, dynamic_size) if dynamic else {}
    )
    if preprocess_in_graph is not None:
        # Any image size, always: resizing to the network input is the graph's job.
        dynamic_axes['image'] = (
            {0: 'batch', 1: 'height', 2: 'width'}
            if dynamic
            else {
                1: 'height',
                2: 'width',
            }
        )

    output_file = Path(output_file)
    tmp_name = str(staging_path(output_file))
    try:
        with torch.no_grad(), _quiet(verbose):
            if exporter == 'dynamo':
                _export_dynamo(
                    module,
                    args,
                    tmp_name,
                    input_names,
                    output_names,
                    dynamic_axes,
                    opset_version,
                )
            else:
                _export_torchscript(
                    module,
                    args,
                    tmp_name,
                    input_names,
                    output_names,
                    dynamic_axes,
                    opset_version,
                )
        # Ops written as onnxscript functions (Loops) become standard nodes of the graph.
        model = onnx_ops.inline_local_functions(onnx.load(tmp_name))
        actual = next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), None)
        if actual != opset_version:
            # torch falls back to its native opset when the onnx version converter lacks an
            # adapter (e.g. Pad 18 -> 17): refuse rather than mislabel the file.
            raise ExportError(
                f'the {exporter} exporter produced opset {actual}, not the requested '
                f'{opset_version}; use --opset-version {actual} or --exporter '
                f'{"torchscript" if exporter == "dynamo" else "dynamo"}'
            )
        _check_dynamic_dims(model, dynamic_axes)
        _set_io_dims(model, dynamic_axes, output_shapes)
        if spec is not None:
            write_onnx_spec(
                model,
                spec.replace(
                    inputs=InputSpec(
                        names=tuple(input_names),
                        layout='normalized' if preprocess_in_graph is None else 'bgr_uint8',
                        dynamic=dynamic,
                        dynamic_size=dynamic and dynamic_size,
                        static_shape=(
                            None
                            if (dynamic and dynamic_size) or preprocess_in_graph is not None
                            else tuple(img.shape[2:])
                        ),
                        size_divisor=spec.preprocess.size_divisor,
                    ),
                    outputs=tuple(output_names),
                    opset=opset_version,
                    exporter=exporter,
                    skip_postprocess=skip_postprocess,
                ),
            )
        onnx.save(model, tmp_name)
        commit(tmp_name, output_file)
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(
            f'{exporter} export failed: {type(err).__name__}: '
            f'{str(err).strip().splitlines()[0] if str(err).strip() else ""}'
        ) from err
    finally:
        discard(tmp_name)
    return dict(input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes)


def _smaller_example(
    detector: nn.Module, img: Tensor, img_shape: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """The example cropped to the detector's ``dynamic_trace_size`` ``(h, w)``, where it sets
    one. A dynamic graph does not depend on the example's size, and for such a model the
    forward pass of tracing at full size is most of the export (DINO R50: its 900-query
    transformer over 17,821 tokens a picture, docs/benchmark.md)."""
    size = getattr(detector, 'dynamic_trace_size', None)
    if size is None:
        return img, img_shape
    h, w = min(img.shape[2], size[0]), min(img.shape[3], size[1])
    if img_shape is not None:
        img_shape = torch.minimum(img_shape, img_shape.new_tensor([float(h), float(w)]))
    return img[:, :, :h, :w].contiguous(), img_shape


#: side of the small input the output shapes are read from (a multiple of every stride)
_SHAPE_PROBE = 128


def _output_shapes(module: nn.Module, args: tuple, output_names, shape_free: bool) -> dict:
    """The output shapes of ``module`` on ``args``, which the legacy exporter cannot infer
    through our custom ops (``dets [B, K, 5]``).

    A post-processed detector pads its outputs to ``K = max_per_img`` whatever the image size, so
    when the model takes any size (``shape_free``) the shapes are read from a forward pass on a
    small crop of the example: the full-size eager pass cost a fifth of a dynamo export of
    RetinaNet R50 at 800x1344 (convolutions and sorts on real data) and told nothing more. Raw
    head outputs and decoded-image graphs (whose shapes follow the input) run the example itself.
    """
    if shape_free and isinstance(module, DeployModule):
        img, img_shape = args
        h, w = min(img.shape[2], _SHAPE_PROBE), min(img.shape[3], _SHAPE_PROBE)
        small = img[:, :, :h, :w]
        probe_shape = torch.minimum(img_shape, img_shape.new_tensor([float(h), float(w)]))
        try:
            outputs = module(small, probe_shape)
        except RuntimeError:
            # A backbone that only works at its own size (SSD's VGG at 300x300, called with
            # dynamic_size left on) runs the example itself.
            outputs = module(*args)
        return {n: tuple(t.shape) for n, t in zip(output_names, outputs)}
    return {n: tuple(t.shape) for n, t in zip(output_names, module(*args))}


def _dynamic_axes(input_names, output_names, skip_postprocess: bool, dynamic_size: bool) -> dict:
    axes = {'input': {0: 'batch', 2: 'height', 3: 'width'} if dynamic_size else {0: 'batch'}}
    if skip_postprocess:
        # Raw head maps: batch plus their own spatial sizes.
        for name in output_names:
            axes[name] = {0: 'batch'}
        return axes
    if input_names == ['input']:
        # A model fed the normalised image alone (a classifier) outputs one row per image.
        for name in output_names:
            axes[name] = {0: 'batch'}
        return axes
    axes['img_shape'] = {0: 'batch'}
    for name in output_names:
        axes[name] = {0: 'batch', 1: 'num_dets'}
    if dynamic_size and 'mask_logits' in axes:  # RTMDet-Ins: over the canvas at the mask stride
        axes['mask_logits'].update({2: 'mask_height', 3: 'mask_width'})
    return axes


def _export_dynamo(module, args, path, input_names, output_names, dynamic_axes, opset):
    dynamic_shapes = None
    if dynamic_axes:
        dims = {}

        def dim(name):
            return dims.setdefault(name, torch.export.Dim(name, min=1, max=16384))

        first = input_names[0]  # 'input', or 'image' with the pre-processing in the graph
        spec = {first: {a: dim(n) for a, n in dynamic_axes[first].items()}}
        if 'img_shape' in input_names:
            spec['img_shape'] = {0: dim('batch')}
        dynamic_shapes = spec
    program = torch.onnx.export(
        module,
        args,
        None,
        dynamo=True,
        external_data=False,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_shapes=dynamic_shapes,
        custom_translation_table=onnx_ops.onnx_translation_table(),
        verbose=False,  # True prints the whole traced graph
        optimize=True,
    )
    program.save(path, external_data=False)


def _export_torchscript(module, args, path, input_names, output_names, dynamic_axes, opset):
    onnx_ops.register_legacy_symbolics(opset)
    torch.onnx.export(
        module,
        args,
        path,
        dynamo=False,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes or None,
        do_constant_folding=True,
        verbose=False,  # True prints the whole traced graph
    )


def _set_io_dims(model: onnx.ModelProto, dynamic_axes: dict, output_shapes: dict) -> None:
    """Name every dynamic dim of the graph inputs/outputs as promised, and write the static output
    dims the legacy exporter cannot infer through a custom op (e.g. ``dets [.., .., 5]``)."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        axes = dynamic_axes.get(value.name, {})
        for axis, dim in enumerate(dims):
            if axis in axes:
                dim.dim_param = axes[axis]
            elif value.name in output_shapes and axis < len(output_shapes[value.name]):
                dim.dim_value = output_shapes[value.name][axis]


def _check_dynamic_dims(model: onnx.ModelProto, dynamic_axes: dict) -> None:
    """torch.export may silently specialise a dim: make sure the inputs stayed symbolic."""
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        for axis in dynamic_axes.get(value.name, {}):
            if dims[axis].HasField('dim_value') and not dims[axis].dim_param:
                raise ExportError(
                    f'input {value.name!r} axis {axis} was specialised to '
                    f'{dims[axis].dim_value} during export'
                )


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Keep the exporters' progress chatter and deprecation warnings off the console."""
    if verbose:
        yield
        return
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter('ignore')
        yield
