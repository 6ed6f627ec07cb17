"""Mixed FP16 / FP32 ONNX models: the feature extractor in FP16, post-processing in FP32.

Where FP16 is allowed is decided once, here, for every consumer (the FP16 ONNX export of
``tools/pytorch2onnx.py --precision fp16``, and TensorRT engines of either major version): the
*feature extractor* -- every Conv / ConvTranspose / Gemm / MatMul and everything that feeds one
through float tensors (backbone, neck, head towers) -- may run in FP16; everything from TopK,
NonMaxSuppression or RoiAlign on (box decode, top-k, NMS, RoI heads, mask heads) stays FP32, so NMS
sees FP32 boxes and scores and box decoding cannot overflow (``exp`` of a large delta) or lose
whole pixels at COCO sizes. Graph inputs and outputs keep their types (float32).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: ops whose work dominates and that run in FP16 (with everything feeding them)
COMPUTE_OPS = frozenset(('Conv', 'ConvTranspose', 'Gemm', 'MatMul'))
#: the convolutions alone: what FP16 ONNX files convert (see deploy/export/fp16.py)
CONV_OPS = frozenset(('Conv', 'ConvTranspose'))
#: ops after which the graph is post-processing: kept in FP32 with all their descendants
POSTPROCESS_OPS = frozenset(('TopK', 'NonMaxSuppression', 'RoiAlign'))
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
# the conversion of an ONNX model
# --------------------------------------------------------------------------------------------
def convert_to_mixed_fp16(
    model: onnx.ModelProto, compute_ops: frozenset = COMPUTE_OPS
) -> onnx.ModelProto:
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

    # Control flow (Loop / If bodies: corner pooling, soft-NMS) stays FP32 as a whole: its body
    # is typed for float32 and reads outer tensors by name, beyond the node's inputs.
    implicit = {i: _outer_references(n) for i, n in enumerate(nodes) if _has_subgraph(n)}
    referenced = set().union(*implicit.values()) if implicit else set()

    def follows(i: int, pos: int, name: str) -> bool:
        return (
            pos in slots[i][0]
            and is_float(name)
            and nodes[i].op_type not in _ATTRIBUTE_TYPED
            and i not in implicit
        )

    def producer_ok(j: int) -> bool:
        return (
            nodes[j].op_type not in _ATTRIBUTE_TYPED
            and bool(slots[j][1])
            and j not in implicit
            and not referenced.intersection(nodes[j].output)
        )

    low = low_precision_nodes(
        [n.op_type for n in nodes],
        [list(n.input) for n in nodes],
        [list(n.output) for n in nodes],
        compute_ops,
        POSTPROCESS_OPS,
        follows,
    )
    # A producer joins only if its float outputs can be FP16; drop those that cannot.
    low = {i for i in low if nodes[i].op_type in compute_ops or producer_ok(i)}

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
    used |= referenced
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


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
    )


def _outer_references(node: onnx.NodeProto) -> set[str]:
    """Names the subgraphs of ``node`` read from enclosing scopes (not produced, nor inputs or
    initializers, inside them), recursively."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            local = {v.name for v in graph.input} | {i.name for i in graph.initializer}
            local |= {name for n in graph.node for name in n.output}
            for inner in graph.node:
                used = set(inner.input) | _outer_references(inner)
                names |= {name for name in used if name and name not in local}
            names |= {o.name for o in graph.output if o.name not in local}
    return names


def _toposort(nodes: list) -> list:
    """Order ``nodes`` so every tensor is produced before it is consumed, including the outer
    tensors a Loop or If body reads (names no node produces -- graph inputs, initializers,
    outer scopes -- are always available)."""
    produced = {name for n in nodes for name in n.output}
    needs = [list(n.input) + sorted(_outer_references(n)) for n in nodes]
    done: set[str] = set()
    ordered, pending = [], list(zip(nodes, needs))
    while pending:
        waiting = []
        for node, inputs in pending:
            if all(name not in produced or name in done for name in inputs if name):
                ordered.append(node)
                done.update(node.output)
            else:
                waiting.append((node, inputs))
        if len(waiting) == len(pending):
            raise RuntimeError('FP16 conversion produced a cyclic graph (this is a bug)')
        pending = waiting
    return ordered
