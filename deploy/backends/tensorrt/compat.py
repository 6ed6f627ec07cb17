"""Will TensorRT 10's ONNX parser and builder accept this graph? Checked on CPU, before any GPU.

The rules (see ``docs/tensorrt.md``), each reported as one line naming the node:

1. **Operators**: only op types in :data:`SUPPORTED_OPS` (the default ONNX domain). The list is an
   allow-list, not TensorRT's full support matrix: it covers every op our exported graphs use plus
   common neighbours, all of which the TensorRT 10 ONNX parser imports natively (``RoiAlign``
   through the built-in ``ROIAlign_TRT`` plugin). Known-unsupported forms of supported ops are
   refused too: ``ScatterND``/``ScatterElements`` with a reduction, cubic or antialiased
   ``Resize``, ``MaxPool`` with its indices output.
2. **TopK k bound**: TensorRT needs ``k < 3840``. A constant k is read directly; a computed k must
   be bounded by a constant through ``Min``/``Clip`` (what :func:`deploy.ops.topk.clamped_topk`
   exports) -- TensorRT derives the same bound when it builds, a k it cannot bound fails there.
3. **TopK k within its axis at the smallest profile shape**: with ``min_shapes`` given (or a fully
   static graph), the k values and the axis lengths are *evaluated* with ONNX Runtime on zero
   inputs of those shapes (the subgraph up to the TopK inputs only). Without them, a dynamic graph
   is only checked structurally: a constant k on an axis whose length is not static is reported,
   since some small input would make it too large. Limits: an axis whose length depends on the
   input *values* (after ``NonZero``, say) is evaluated for zero inputs only.
4. **NMS inputs in FP32**: ``NonMaxSuppression`` boxes and scores must be float32 (FP16 boxes lose
   whole pixels at COCO sizes and change IoU decisions); element types come from ONNX shape
   inference, so a type the inference cannot determine is not reported.
5. **Loops**: TensorRT builds an ONNX ``Loop`` (``ILoop``) whose trip count and condition are
   computed at run time, but a *scan output* (a per-iteration output stacked by the loop) must
   have a length known when the engine is built: a Loop with scan outputs needs a constant trip
   count. (Loop-carried values must also keep their shape across iterations; our loops carry
   fixed-size tensors.)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...errors import ExportError

#: TensorRT's TopK limit: k must be strictly below this
TOPK_MAX_K = 3840

#: ONNX op types (default domain) the TensorRT 10 parser imports natively and that our graphs use
#: or may reasonably grow to use. Deliberately absent: Unique, Sequence*/Optional*, String*,
#: Bernoulli/Multinomial, Compress, the windowing/STFT ops and anything in a custom domain.
SUPPORTED_OPS = frozenset(
    """
    Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos CumSum DepthToSpace Div Dropout Einsum Elu Equal Erf Exp
    Expand Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish Identity If
    InstanceNormalization LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop MatMul
    Max MaxPool Mean Min Mod Mul Neg NonMaxSuppression NonZero Not Or Pad Pow PRelu Range Reciprocal
    ReduceL2 ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum Relu Reshape Resize RoiAlign Round
    ScatterElements ScatterND Shape Sigmoid Sign Sin Size Slice Softmax Softplus SpaceToDepth Split
    Sqrt Squeeze Sub Sum Tanh Tile TopK Transpose Trilu Unsqueeze Where Xor
    """.split()
)

#: ops through which a tensor's upper bound passes unchanged (data input first)
_BOUND_TRANSPARENT = frozenset(
    ('Cast', 'Reshape', 'Squeeze', 'Unsqueeze', 'Identity', 'Flatten', 'Expand', 'Gather', 'Slice')
)


def check_tensorrt_compat(
    model: onnx.ModelProto, min_shapes: dict[str, list[int]] | None = None
) -> list[str]:
    """Problems that would stop TensorRT from parsing or building ``model``, one line each.

    Args:
        model: the ONNX graph (not modified).
        min_shapes: the smallest shape of every graph input in the optimisation profile
            (``{'input': [1, 3, 320, 320], 'img_shape': [1, 2]}``); enables rule 3 on dynamic
            graphs. Missing inputs fall back to their static shape.

    Returns:
        Human-readable problems, empty when the graph passes.
    """
    graph = model.graph
    problems: list[str] = []
    problems += _check_ops(graph)
    consts = _constants(graph)
    producers = {out: node for node in graph.node for out in node.output}
    topks = [n for n in graph.node if n.op_type == 'TopK']
    for node in topks:
        bound = _upper_bound(node.input[1], consts, producers) if len(node.input) > 1 else None
        if bound is None:
            problems.append(
                f'TopK {_name(node)}: k is computed and not bounded by a constant (TensorRT needs '
                f'k < {TOPK_MAX_K}); clamp it with Min(k, const)'
            )
        elif bound >= TOPK_MAX_K:
            problems.append(
                f'TopK {_name(node)}: k can reach {bound}, TensorRT allows at most '
                f'{TOPK_MAX_K - 1}; lower the top-k setting behind it (nms_pre / max_per_img, '
                'PointRend: subdivision_num_points)'
            )
    problems += _check_loops(graph, consts)
    inferred = _infer(model)
    problems += _check_nms_types(graph, inferred)
    shapes = _input_shapes(graph, min_shapes)
    if topks:
        if shapes is not None:
            problems += _evaluate_topk_k(model, topks, shapes)
        else:
            problems += _check_constant_k_on_dynamic_axis(topks, consts, inferred)
    return problems


def assert_tensorrt_compatible(
    model: onnx.ModelProto, min_shapes: dict[str, list[int]] | None = None
) -> None:
    """Raise :class:`~deploy.errors.ExportError` listing every :func:`check_tensorrt_compat`
    problem (the first line says how many)."""
    problems = check_tensorrt_compat(model, min_shapes)
    if problems:
        raise ExportError(
            f'graph is not TensorRT-compatible ({len(problems)} problem'
            f'{"s" if len(problems) > 1 else ""}): ' + '; '.join(problems)
        )


# --------------------------------------------------------------------------------------------
# rule 1: operators
# --------------------------------------------------------------------------------------------
def _check_ops(graph: onnx.GraphProto) -> list[str]:
    problems = []
    for node in graph.node:
        where = f'{node.op_type} {_name(node)}'
        if node.domain not in ('', 'ai.onnx'):
            problems.append(
                f'{where}: custom-domain op {node.domain}::{node.op_type} needs a TensorRT plugin'
            )
            continue
        if node.op_type not in SUPPORTED_OPS:
            problems.append(f'{where}: op type {node.op_type} is not supported by TensorRT')
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ('ScatterND', 'ScatterElements') and _text(
            attrs.get('reduction')
        ) not in (
            '',
            'none',
        ):
            problems.append(f'{where}: reduction={_text(attrs["reduction"])} is not supported')
        if node.op_type == 'Resize':
            if _text(attrs.get('mode')) == 'cubic':
                problems.append(f'{where}: cubic Resize is not supported')
            if attrs.get('antialias'):
                problems.append(f'{where}: antialiased Resize is not supported')
        if node.op_type == 'MaxPool' and len(node.output) > 1 and node.output[1]:
            problems.append(f'{where}: the Indices output of MaxPool is not supported')
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                problems += _check_ops(attr.g)
    return problems


# --------------------------------------------------------------------------------------------
# rule 2: a constant upper bound of k
# --------------------------------------------------------------------------------------------
def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == 'Constant' and node.attribute:
            attr = node.attribute[0]
            if attr.name == 'value':
                consts[node.output[0]] = numpy_helper.to_array(attr.t)
            elif attr.name in ('value_int', 'value_float'):
                consts[node.output[0]] = np.asarray(helper.get_attribute_value(attr))
            elif attr.name in ('value_ints', 'value_floats'):
                consts[node.output[0]] = np.asarray(helper.get_attribute_value(attr))
    return consts


def _upper_bound(name: str, consts: dict, producers: dict, depth: int = 0) -> int | None:
    """A constant that ``name``'s value can never exceed, or None when none is evident."""
    if name in consts:
        value = consts[name]
        return int(value.max()) if value.size else None
    node = producers.get(name)
    if node is None or depth > 32:
        return None
    inputs = [i for i in node.input if i]
    if node.op_type in _BOUND_TRANSPARENT:
        return _upper_bound(inputs[0], consts, producers, depth + 1)
    if node.op_type == 'Min':
        bounds = [_upper_bound(i, consts, producers, depth + 1) for i in inputs]
        known = [b for b in bounds if b is not None]
        return min(known) if known else None
    if node.op_type == 'Clip':
        bounds = [_upper_bound(inputs[0], consts, producers, depth + 1)]
        if len(node.input) > 2 and node.input[2]:
            bounds.append(_upper_bound(node.input[2], consts, producers, depth + 1))
        known = [b for b in bounds if b is not None]
        return min(known) if known else None
    if node.op_type in ('Max', 'Concat'):
        bounds = [_upper_bound(i, consts, producers, depth + 1) for i in inputs]
        return None if any(b is None for b in bounds) else max(bounds)
    return None


# --------------------------------------------------------------------------------------------
# rule 3: k within its axis
# --------------------------------------------------------------------------------------------
def _input_shapes(graph: onnx.GraphProto, min_shapes: dict | None) -> dict | None:
    """Concrete shapes for every graph input, or None when some dim stays unknown."""
    initializers = {i.name for i in graph.initializer}
    shapes = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if min_shapes and value.name in min_shapes:
            shape = [int(d) for d in min_shapes[value.name]]
            declared = [d.dim_value if d.HasField('dim_value') else None for d in dims]
            if len(shape) != len(declared) or any(
                d is not None and d != s for d, s in zip(declared, shape)
            ):
                raise ExportError(
                    f'profile shape {shape} of input {value.name!r} does not fit the graph '
                    f'input {["?" if d is None else d for d in declared]}'
                )
            shapes[value.name] = shape
            continue
        if not all(d.HasField('dim_value') for d in dims):
            return None
        shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _evaluate_topk_k(model: onnx.ModelProto, topks, shapes: dict) -> list[str]:
    """Run the graph up to the TopK inputs with ONNX Runtime on zeros of ``shapes``; compare each
    k with the length of its axis."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    wanted, requested = [], []
    for i, node in enumerate(topks):
        shape_out = f'__trt_compat_shape_{i}'
        probe.graph.node.append(helper.make_node('Shape', [node.input[0]], [shape_out]))
        wanted.append((node, node.input[1], shape_out))
        for name in (node.input[1], shape_out):
            if name not in requested:
                requested.append(name)
                probe.graph.output.append(
                    helper.make_tensor_value_info(name, TensorProto.INT64, None)
                )
    # Keep only the nodes the requested values depend on: a TopK whose own k is too large is
    # never run, unless a later TopK's input needs it (then the run fails and names that node).
    needed, kept = set(requested), []
    for node in reversed(list(probe.graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    del probe.graph.node[:]
    probe.graph.node.extend(reversed(kept))
    del probe.graph.value_info[:]
    feeds = _zero_feeds(model.graph, shapes)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            probe.SerializeToString(), options, providers=['CPUExecutionProvider']
        )
        values = session.run(None, feeds)
    except Exception as err:  # ORT's own error types
        msg = ' '.join(str(err).split())[:300] or type(err).__name__
        return [f'evaluating TopK k at shapes {shapes} failed: {msg}']
    problems = []
    results = dict(zip([o.name for o in probe.graph.output], values))
    for node, k_name, shape_name in wanted:
        k = int(np.asarray(results[k_name]).reshape(-1)[0])
        dims = np.asarray(results[shape_name]).tolist()
        axis = _attr(node, 'axis', -1)
        length = dims[axis]
        if k > length:
            problems.append(
                f'TopK {_name(node)}: k={k} exceeds its axis length {length} at input shapes '
                f'{shapes}; clamp k with Min(k, axis length) or raise the min profile shape'
            )
    return problems


def _zero_feeds(graph: onnx.GraphProto, shapes: dict) -> dict[str, np.ndarray]:
    """Zero inputs; an ``img_shape``-like ``[B, 2]`` float input gets the image's (h, w) so the
    graph sees a consistent batch."""
    image = next((s for s in shapes.values() if len(s) == 4), None)
    feeds = {}
    for value in graph.input:
        if value.name not in shapes:
            continue
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        array = np.zeros(shapes[value.name], dtype)
        if (
            image is not None
            and array.ndim == 2
            and array.shape[-1] == 2
            and array.dtype.kind == 'f'
        ):
            array[:] = image[2:]
        feeds[value.name] = array
    return feeds


def _check_constant_k_on_dynamic_axis(topks, consts: dict, inferred: dict) -> list[str]:
    problems = []
    for node in topks:
        if len(node.input) < 2 or node.input[1] not in consts:
            continue
        k = int(np.asarray(consts[node.input[1]]).reshape(-1)[0])
        shape = inferred.get(node.input[0], (None, None))[1]
        axis = _attr(node, 'axis', -1)
        length = None
        if shape is not None and -len(shape) <= axis < len(shape):
            length = shape[axis]
        if isinstance(length, int):
            if k > length:
                problems.append(
                    f'TopK {_name(node)}: k={k} exceeds its static axis length {length}'
                )
        else:
            problems.append(
                f'TopK {_name(node)}: constant k={k} on an axis of dynamic length; small inputs '
                'make k exceed the axis -- clamp it with Min(k, axis length)'
            )
    return problems


# --------------------------------------------------------------------------------------------
# rule 4: NMS inputs in FP32
# --------------------------------------------------------------------------------------------
def _check_nms_types(graph: onnx.GraphProto, inferred: dict) -> list[str]:
    problems = []
    for node in graph.node:
        if node.op_type != 'NonMaxSuppression':
            continue
        for role, name in zip(('boxes', 'scores'), node.input[:2]):
            elem = inferred.get(name, (None, None))[0]
            if elem not in (None, TensorProto.UNDEFINED, TensorProto.FLOAT):
                problems.append(
                    f'NonMaxSuppression {_name(node)}: {role} are '
                    f'{TensorProto.DataType.Name(elem)}, must be FLOAT '
                    '(keep decode and NMS in FP32)'
                )
    return problems


# --------------------------------------------------------------------------------------------
# rule 5: loops
# --------------------------------------------------------------------------------------------
def _check_loops(graph: onnx.GraphProto, consts: dict) -> list[str]:
    problems = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                problems += _check_loops(attr.g, {**consts, **_constants(attr.g)})
        if node.op_type != 'Loop':
            continue
        body = _attr(node, 'body', None)
        num_carried = len(node.input) - 2
        num_scan = len(body.output) - 1 - num_carried if body is not None else 0
        trip_count = node.input[0] if node.input else ''
        if num_scan > 0 and trip_count not in consts:
            problems.append(
                f'Loop {_name(node)}: {num_scan} scan output(s) with a trip count computed at run '
                'time; TensorRT needs their length when it builds (carry a fixed-size tensor '
                'instead, or make the trip count a constant)'
            )
    return problems


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _infer(model: onnx.ModelProto) -> dict[str, tuple[int, list | None]]:
    """``name -> (elem_type, dims)`` from ONNX shape inference; dims hold ints or dim names."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference may reject exotic graphs; fall back to the declared types
        inferred = model
    table = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = value.type.tensor_type
        dims = None
        if tensor.HasField('shape'):
            dims = [
                d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
                for d in tensor.shape.dim
            ]
        table[value.name] = (tensor.elem_type, dims)
    for init in graph.initializer:
        table[init.name] = (init.data_type, list(init.dims))
    return table


def _attr(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _name(node: onnx.NodeProto) -> str:
    return repr(node.name or node.output[0])


def _text(value) -> str:
    if value is None:
        return ''
    return value.decode() if isinstance(value, bytes) else str(value)
