"""FP32 / FP16 engines on TensorRT 10 (weak typing) and TensorRT 11 (strong typing only).

Where FP16 is allowed is decided the same way for both versions: the *feature extractor* -- every
Conv / ConvTranspose / Gemm / MatMul and everything that feeds one through float tensors (backbone,
neck, head towers) -- may run in FP16; everything after the last convolution (sigmoid, box decode,
top-k, NMS, RoI heads after RoiAlign) stays FP32, so NMS sees FP32 boxes and scores and box
decoding cannot overflow (``exp`` of a large delta) or lose whole pixels at COCO sizes.

* TensorRT 10: the FP32 ONNX model is parsed as is, ``BuilderFlag.FP16`` lets TensorRT choose FP16
  kernels, and the post-processing layers are pinned to FP32 (``ILayer.precision`` and
  ``set_output_type``, honoured under ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``).
* TensorRT 11 removed those flags: networks are strongly typed, so the ONNX model itself is
  converted (:func:`convert_to_mixed_fp16`) with explicit ``Cast`` nodes at the boundaries, and the
  builder follows the graph's types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...errors import BackendError

#: ``tf32`` is fp32 with TF32 tensor cores allowed (off for ``fp32``)
PRECISIONS = ('fp32', 'tf32', 'fp16')

#: ops whose work dominates and that run in FP16 (with everything feeding them)
_COMPUTE_OPS = frozenset(('Conv', 'ConvTranspose', 'Gemm', 'MatMul'))
#: ops after which the graph is post-processing: kept in FP32 with all their descendants
_POSTPROCESS_OPS = frozenset(('TopK', 'NonMaxSuppression', 'RoiAlign'))
#: ops whose output type is set by an attribute: never converted, their outputs are cast instead
_ATTRIBUTE_TYPED = frozenset(
    (
        'Cast',
        'CastLike',
        'Constant',
        'ConstantOfShape',
        'EyeLike',
        'RandomNormal',
        'RandomUniform',
        'RandomNormalLike',
        'RandomUniformLike',
        'Shape',
        'Size',
    )
)


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
# which nodes may run in FP16: shared by the ONNX conversion and the TensorRT 10 layer pinning
# --------------------------------------------------------------------------------------------
def low_precision_nodes(
    kinds: list[str],
    inputs: list[list[str]],
    outputs: list[list[str]],
    compute: frozenset,
    postprocess: frozenset,
    follows,
) -> set[int]:
    """Indices of the nodes that may run in FP16.

    Args:
        kinds: op kind of each node.
        inputs, outputs: tensor names per node.
        compute: kinds that seed the FP16 region (convolutions, matrix products).
        postprocess: kinds whose descendants are forced to FP32.
        follows: ``follows(node_index, input_position, tensor_name) -> bool``: whether the FP16
            region extends backwards through this input to its producer (a float tensor of a
            convertible type).
    """
    producer = {name: i for i, outs in enumerate(outputs) for name in outs if name}
    consumers: dict[str, list[int]] = {}
    for i, ins in enumerate(inputs):
        for name in ins:
            if name:
                consumers.setdefault(name, []).append(i)
    # Post-processing: the postprocess nodes and all their descendants.
    post = set()
    stack = [i for i, kind in enumerate(kinds) if kind in postprocess]
    while stack:
        i = stack.pop()
        if i in post:
            continue
        post.add(i)
        for name in outputs[i]:
            stack.extend(consumers.get(name, ()))
    low = set()
    stack = [i for i, kind in enumerate(kinds) if kind in compute and i not in post]
    while stack:
        i = stack.pop()
        if i in low:
            continue
        low.add(i)
        for pos, name in enumerate(inputs[i]):
            j = producer.get(name)
            if j is not None and j not in post and j not in low and follows(i, pos, name):
                stack.append(j)
    return low


# --------------------------------------------------------------------------------------------
# TensorRT 11: convert the ONNX model
# --------------------------------------------------------------------------------------------
def convert_to_mixed_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose feature extractor computes in FP16 and whose post-processing
    (decode, top-k, NMS) stays FP32; graph inputs and outputs keep their types.

    Weights used only in the FP16 region are stored as FP16; ``Cast`` nodes are inserted where a
    tensor crosses between the regions. Inputs whose ONNX type is fixed (``Resize`` scales, ...)
    are left alone, so the result passes ``onnx.checker`` and runs in ONNX Runtime.
    """
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    model = model_copy
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), 18)
    types = _elem_types(model)
    nodes = list(graph.node)
    slots = [_fp16_slots(n, opset) for n in nodes]

    def is_float(name: str) -> bool:
        return types.get(name) == TensorProto.FLOAT

    def follows(i: int, pos: int, name: str) -> bool:
        return pos in slots[i][0] and is_float(name) and nodes[i].op_type not in _ATTRIBUTE_TYPED

    def producer_ok(j: int) -> bool:
        return nodes[j].op_type not in _ATTRIBUTE_TYPED and bool(slots[j][1])

    low = low_precision_nodes(
        [n.op_type for n in nodes],
        [list(n.input) for n in nodes],
        [list(n.output) for n in nodes],
        _COMPUTE_OPS,
        _POSTPROCESS_OPS,
        follows,
    )
    # A producer joins only if its float outputs can be FP16; drop those that cannot.
    low = {i for i in low if nodes[i].op_type in _COMPUTE_OPS or producer_ok(i)}

    initializers = {init.name: init for init in graph.initializer}
    constants = {
        n.output[0]: n
        for n in nodes
        if n.op_type == 'Constant' and n.attribute and n.attribute[0].name == 'value'
    }
    # Tensors that become FP16: float outputs at FP16 slots of FP16 nodes.
    half = {
        name
        for i in low
        for pos, name in enumerate(nodes[i].output)
        if name and pos in slots[i][1] and is_float(name)
    }
    new_inits, casts_to_half, casts_to_float = [], {}, {}
    rewritten = []
    for i, node in enumerate(nodes):
        if i in low:
            for pos, name in enumerate(node.input):
                if name in half and pos not in slots[i][0]:
                    node.input[pos] = _cast_back(name, casts_to_float, rewritten)
                    continue
                if not name or pos not in slots[i][0] or not is_float(name) or name in half:
                    continue
                if name in initializers or name in constants:
                    half_name = f'{name}__fp16'
                    if half_name not in casts_to_half:
                        source = initializers.get(name)
                        array = (
                            numpy_helper.to_array(source)
                            if source is not None
                            else numpy_helper.to_array(constants[name].attribute[0].t)
                        )
                        new_inits.append(
                            numpy_helper.from_array(array.astype(np.float16), half_name)
                        )
                        casts_to_half[half_name] = None
                    node.input[pos] = half_name
                else:
                    half_name = f'{name}__to_fp16'
                    if half_name not in casts_to_half:
                        casts_to_half[half_name] = helper.make_node(
                            'Cast',
                            [name],
                            [half_name],
                            to=TensorProto.FLOAT16,
                            name=f'{half_name}_cast',
                        )
                        rewritten.append(casts_to_half[half_name])
                    node.input[pos] = half_name
        else:
            for pos, name in enumerate(node.input):
                if name in half and node.op_type not in ('Shape', 'Size'):
                    node.input[pos] = _cast_back(name, casts_to_float, rewritten)
        rewritten.append(node)
    for out in graph.output:
        if out.name in half:
            # Keep the graph's output name: rename the FP16 tensor, cast into the old name.
            inner = f'{out.name}__fp16'
            for node in rewritten:
                for lst in (node.input, node.output):
                    for pos, name in enumerate(lst):
                        if name == out.name:
                            lst[pos] = inner
            rewritten.append(
                helper.make_node(
                    'Cast', [inner], [out.name], to=TensorProto.FLOAT, name=f'{out.name}_to_fp32'
                )
            )
    # Drop Constant nodes whose only consumers now read an FP16 copy; then order topologically
    # (a Cast must come after its input's producer).
    used = {name for n in rewritten for name in n.input} | {o.name for o in graph.output}
    rewritten = [n for n in rewritten if n.op_type != 'Constant' or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(_toposort(rewritten))
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    del graph.value_info[:]
    return model


def _cast_back(name: str, cache: dict, nodes: list) -> str:
    if name not in cache:
        cache[name] = f'{name}__to_fp32'
        nodes.append(
            helper.make_node(
                'Cast', [name], [cache[name]], to=TensorProto.FLOAT, name=f'{name}_to_fp32_cast'
            )
        )
    return cache[name]


def _fp16_slots(node: onnx.NodeProto, opset: int) -> tuple[set[int], set[int]]:
    """Input and output positions whose ONNX type constraint admits float16 (i.e. that follow
    the node's compute type rather than a fixed type such as ``Resize``'s float scales)."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or '')
    except onnx.defs.SchemaError:
        return set(), set()
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

    def positions(formals, count):
        result = set()
        for pos in range(count):
            if not formals:
                break
            formal = formals[min(pos, len(formals) - 1)]
            types = allowed.get(formal.type_str, {formal.type_str})
            if 'tensor(float16)' in types and 'tensor(float)' in types:
                result.add(pos)
        return result

    return positions(schema.inputs, len(node.input)), positions(schema.outputs, len(node.output))


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    graph = inferred.graph
    types = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == 'Constant' and node.attribute and node.attribute[0].name == 'value':
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def _toposort(nodes: list) -> list:
    """Order ``nodes`` so every tensor is produced before it is consumed (names no node
    produces -- graph inputs, initializers, outer scopes -- are always available)."""
    produced = {name for n in nodes for name in n.output}
    done: set[str] = set()
    ordered, pending = [], list(nodes)
    while pending:
        waiting = []
        for node in pending:
            if all(name not in produced or name in done for name in node.input if name):
                ordered.append(node)
                done.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise BackendError('FP16 conversion produced a cyclic graph (this is a bug)')
        pending = waiting
    return ordered


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
