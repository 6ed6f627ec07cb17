"""FP32 / FP16 engines on TensorRT 10 (weak typing) and TensorRT 11 (strong typing only).

Where FP16 is allowed is decided the same way for both versions, by
:mod:`deploy.onnx_graph.mixed_precision`: the feature extractor may run in FP16, post-processing
(box decode, top-k, NMS, RoI and mask heads) stays FP32.

* TensorRT 10: the FP32 ONNX model is parsed as is, ``BuilderFlag.FP16`` lets TensorRT choose FP16
  kernels, and the post-processing layers are pinned to FP32 (``ILayer.precision`` and
  ``set_output_type``, honoured under ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``).
* TensorRT 11 removed those flags: networks are strongly typed, so the ONNX model itself is
  converted (:func:`deploy.onnx_graph.mixed_precision.convert_to_mixed_fp16`, the same conversion
  as the FP16 ONNX export) with explicit ``Cast`` nodes at the boundaries, and the builder follows
  the graph's types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import BackendError
from ...onnx_graph.mixed_precision import convert_to_mixed_fp16, low_precision_nodes

__all__ = [
    'PRECISIONS',
    'PrecisionPlan',
    'apply_builder_flags',
    'convert_to_mixed_fp16',
    'network_creation_flags',
    'pin_postprocess_to_fp32',
    'plan_precision',
]

#: ``tf32`` is fp32 with TF32 tensor cores allowed (off for ``fp32``)
PRECISIONS = ('fp32', 'tf32', 'fp16')


# --------------------------------------------------------------------------------------------
# precision plan per TensorRT major version
# --------------------------------------------------------------------------------------------
@dataclass
class PrecisionPlan:
    """What the builder does for one precision on one TensorRT version."""

    precision: str
    trt_major: int
    strongly_typed: bool
    #: names of ``trt.BuilderFlag`` members to set
    builder_flags: list[str] = field(default_factory=list)
    #: convert the ONNX model with :func:`convert_to_mixed_fp16` before parsing
    convert_onnx_to_fp16: bool = False
    #: pin post-processing layers to FP32 with :func:`pin_postprocess_to_fp32`
    pin_postprocess_fp32: bool = False


def trt_major_version(trt) -> int:
    """The major version of an imported ``tensorrt`` module (``'10.9.0.34'`` -> 10)."""
    try:
        return int(str(trt.__version__).split('.')[0])
    except (AttributeError, ValueError):
        raise BackendError(f'cannot read the TensorRT version from {trt!r}') from None


def plan_precision(trt, precision: str) -> PrecisionPlan:
    """How to build a ``precision`` engine with this ``tensorrt`` module.

    TensorRT 11 (or any build without ``BuilderFlag.FP16``) gets a strongly typed network and an
    FP16-converted ONNX model; TensorRT 10 gets ``BuilderFlag.FP16`` with FP32 post-processing.
    """
    if precision not in PRECISIONS:
        raise BackendError(
            f'unknown precision {precision!r}; choose one of {", ".join(PRECISIONS)}'
        )
    major = trt_major_version(trt)
    if major < 10:
        raise BackendError(f'TensorRT {trt.__version__} is too old: TensorRT 10 or newer is needed')
    weak_typing = major == 10 and hasattr(trt.BuilderFlag, 'FP16')
    if not weak_typing:
        return PrecisionPlan(
            precision, major, strongly_typed=True, convert_onnx_to_fp16=precision == 'fp16'
        )
    if precision in ('fp32', 'tf32'):
        return PrecisionPlan(precision, major, strongly_typed=False)
    return PrecisionPlan(
        precision,
        major,
        strongly_typed=False,
        builder_flags=['FP16', 'OBEY_PRECISION_CONSTRAINTS'],
        pin_postprocess_fp32=True,
    )


def network_creation_flags(trt, plan: PrecisionPlan) -> int:
    """The ``create_network`` flags: ``STRONGLY_TYPED`` where the plan asks for it (TensorRT 11
    accepts and ignores the flag: strong typing is always on)."""
    flags = 0
    if plan.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED'):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def apply_builder_flags(trt, config, plan: PrecisionPlan) -> None:
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))


# --------------------------------------------------------------------------------------------
# TensorRT 10: pin the post-processing layers of a parsed network to FP32
# --------------------------------------------------------------------------------------------
def pin_postprocess_to_fp32(trt, network) -> int:
    """Set ``precision`` and output types of every float layer outside the FP16 region to FP32.

    Layers are classified with :func:`low_precision_nodes` over the TensorRT network itself
    (convolution / deconvolution / matrix-multiply layers seed the FP16 region; TopK, NMS and
    RoiAlign-plugin descendants are post-processing). Returns the number of pinned layers.
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    kinds, inputs, outputs, float_tensors = [], [], [], set()
    for layer in layers:
        kinds.append(_layer_kind(trt, layer))
        ins = []
        for j in range(layer.num_inputs):
            tensor = layer.get_input(j)
            ins.append(tensor.name if tensor is not None else '')
            if tensor is not None and tensor.dtype == trt.float32:
                float_tensors.add(tensor.name)
        inputs.append(ins)
        outs = []
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            outs.append(tensor.name)
            if tensor.dtype == trt.float32:
                float_tensors.add(tensor.name)
        outputs.append(outs)
    low = low_precision_nodes(
        kinds,
        inputs,
        outputs,
        frozenset(('compute',)),
        frozenset(('postprocess',)),
        lambda i, pos, name: name in float_tensors,
    )
    pinned = 0
    for i, layer in enumerate(layers):
        if i in low or kinds[i] == 'shape':
            continue
        float_outputs = [
            j for j in range(layer.num_outputs) if layer.get_output(j).dtype == trt.float32
        ]
        if not float_outputs:
            continue
        layer.precision = trt.float32
        for j in float_outputs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def _layer_kind(trt, layer) -> str:
    kind = layer.type
    compute = [
        getattr(trt.LayerType, n, None) for n in ('CONVOLUTION', 'DECONVOLUTION', 'MATRIX_MULTIPLY')
    ]
    post = [getattr(trt.LayerType, n, None) for n in ('TOPK', 'NMS')]
    if kind in compute:
        return 'compute'
    if kind in post:
        return 'postprocess'
    if kind == getattr(trt.LayerType, 'PLUGIN_V2', None) or kind == getattr(
        trt.LayerType, 'PLUGIN_V3', None
    ):
        # RoiAlign arrives as the ROIAlign_TRT plugin: post-processing like the ONNX op.
        return 'postprocess' if 'roi' in (layer.name or '').lower() else 'other'
    if kind in (getattr(trt.LayerType, 'SHAPE', None), getattr(trt.LayerType, 'CONSTANT', None)):
        return 'shape'
    return 'other'
