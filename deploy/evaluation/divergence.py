"""Where two ONNX files of one model part ways (``tools/analysis/divergence.py``): both run on the
same inputs, every float tensor that both graphs produce under the same name is compared, layer
by layer along the reference graph's order, and the layers where the error jumps are named by
the module that made them.

An INT8 (QDQ) file keeps its FP32 twin's tensor names for the float (dequantised) outputs of its
operators, so FP32 against INT8 compares dequantised tensors. Memory stays bounded: the tensors
are exposed as graph outputs a chunk at a time (``chunk`` tensors per run), their statistics are
accumulated over the inputs, and the tensors are dropped before the next chunk.
"""

from __future__ import annotations

import ast
import math
import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np
import onnx

#: SQNR of identical tensors, and the cap that keeps jumps finite (dB)
EXACT_DB = 120.0
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


@dataclass
class TensorStats:
    """Running sums over the inputs: enough for relative error, cosine and SQNR."""

    ref_sq: float = 0.0
    err_sq: float = 0.0
    test_sq: float = 0.0
    dot: float = 0.0
    mismatch: str | None = None

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        if ref.shape != test.shape:
            self.mismatch = f'shape {ref.shape} vs {test.shape}'
            return
        ref, test = ref.astype(np.float64).ravel(), test.astype(np.float64).ravel()
        self.ref_sq += float(ref @ ref)
        self.test_sq += float(test @ test)
        self.dot += float(ref @ test)
        self.err_sq += float((ref - test) @ (ref - test))

    @property
    def rel_error(self) -> float:
        return math.sqrt(self.err_sq / self.ref_sq) if self.ref_sq else float(self.err_sq > 0)

    @property
    def cosine(self) -> float:
        norm = math.sqrt(self.ref_sq * self.test_sq)
        return self.dot / norm if norm else float(self.ref_sq == self.test_sq)

    @property
    def sqnr_db(self) -> float:
        """Signal over error power, dB, capped at :data:`EXACT_DB`."""
        if self.err_sq == 0:
            return EXACT_DB
        if self.ref_sq == 0:
            return 0.0
        return min(EXACT_DB, 10.0 * math.log10(self.ref_sq / self.err_sq))


@dataclass
class LayerDivergence:
    depth: int
    tensor: str
    test_tensor: str
    module: str
    op: str
    stats: TensorStats
    inputs: list[str] = field(default_factory=list)
    #: made inside a module (not graph-level code such as post-processing)
    scoped: bool = True
    #: SQNR lost at this node: the worst compared input's SQNR minus this output's (dB)
    jump_db: float = 0.0

    def to_dict(self) -> dict:
        return dict(
            depth=self.depth,
            module=self.module,
            op=self.op,
            tensor=self.tensor,
            rel_error=self.stats.rel_error,
            cosine=self.stats.cosine,
            sqnr_db=self.stats.sqnr_db,
            jump_db=self.jump_db,
            mismatch=self.stats.mismatch,
            scoped=self.scoped,
        )


def module_name(node: onnx.NodeProto) -> str:
    """The PyTorch module that made ``node``: from the dynamo exporter's name scopes, else from
    the TorchScript exporter's node path (``/backbone/layer1/layer1.0/conv1/Conv`` ->
    ``backbone.layer1.0.conv1``)."""
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = meta.get('pkg.torch.onnx.name_scopes')
    if scopes:
        try:
            parts = [s for s in ast.literal_eval(scopes) if s]
        except (ValueError, SyntaxError):
            parts = []
        if parts:
            return _join_scopes(parts)
    parts = [p for p in node.name.split('/') if p][:-1]
    return _join_scopes(parts) if parts else node.name


def _join_scopes(parts: list[str]) -> str:
    """Scope parts to a dotted module name; a part that repeats its parent's name with a suffix
    (``layer1``, ``layer1.0``) replaces it."""
    joined: list[str] = []
    for part in parts:
        if joined and part.startswith(joined[-1] + '.'):
            joined[-1] = part
        else:
            joined.append(part)
    return '.'.join(joined)


def comparable_tensors(
    ref: onnx.ModelProto, test: onnx.ModelProto
) -> list[tuple[str, str, onnx.NodeProto]]:
    """Float node outputs of ``ref`` (in its node order) that ``test`` produces under the same
    name: ``(ref tensor, test tensor, ref node)``. Where ``test`` quantises the tensor
    (QuantizeLinear -> DequantizeLinear), its dequantised copy is compared: what the next layers
    see (a ReLU folded into the quantisation shows only there)."""
    ref_types = _float_value_names(ref)
    test_outputs = {o for n in test.graph.node for o in n.output}
    dequantised = _dequantised_names(test)
    found = []
    for node in ref.graph.node:
        if node.op_type in ('Constant', 'QuantizeLinear', 'DequantizeLinear'):
            continue
        for out in node.output:
            if out and out in test_outputs and out in ref_types:
                found.append((out, dequantised.get(out, out), node))
    return found


def _dequantised_names(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor -> the output of the DequantizeLinear that follows its QuantizeLinear."""
    dq_of = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == 'DequantizeLinear'}
    return {
        n.input[0]: dq_of[n.output[0]]
        for n in model.graph.node
        if n.op_type == 'QuantizeLinear' and n.output[0] in dq_of
    }


def _float_value_names(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.output)
    return {v.name for v in values if v.type.tensor_type.elem_type in FLOAT_TYPES}


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    """``model`` serialised with ``names`` as its only outputs (shape and type left open)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[:]
    copy.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return copy.SerializeToString()


def _session(model_bytes: bytes, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # unused-initializer notes of cut graphs are not news
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, options, providers=['CPUExecutionProvider'])


def make_runner(engine: str, model_bytes: bytes, names: list[str], threads: int | None):
    """A function ``feed -> [tensor per name]`` on ``engine``: ``onnxruntime``, ``openvino``
    (FP32, or the file's INT8) or ``openvino:bf16``."""
    if engine == 'onnxruntime':
        session = _session(model_bytes, threads)
        return lambda feed: session.run(names, feed)
    import tempfile

    from ..backends.openvino import import_openvino, require_bf16

    ov = import_openvino()
    core = ov.Core()
    bf16 = engine == 'openvino:bf16'
    if bf16:
        require_bf16(core)
    with tempfile.TemporaryDirectory() as tmp:  # OpenVINO reads ONNX from a file
        path = f'{tmp}/cut.onnx'
        with open(path, 'wb') as f:
            f.write(model_bytes)
        config = {'INFERENCE_PRECISION_HINT': 'bf16' if bf16 else 'f32'}
        if threads:
            config['INFERENCE_NUM_THREADS'] = str(threads)
        compiled = core.compile_model(core.read_model(path), 'CPU', config)
    return lambda feed: [np.asarray(v) for v in compiled(feed).values()]


def read_tensors(
    engine: str,
    model_bytes: bytes,
    names: list[str],
    feeds: list[dict[str, np.ndarray]],
    threads: int | None,
) -> list[list[np.ndarray]]:
    """``names`` of ``model_bytes`` on ``engine`` for every feed: ``[feed][name]``."""
    run = make_runner(engine, model_bytes, names, threads)
    return [[np.asarray(t) for t in run(feed)] for feed in feeds]


def read_isolated(
    engine: str,
    model: onnx.ModelProto,
    names: list[str],
    feeds: list[dict[str, np.ndarray]],
    threads: int | None,
    reader: Callable = read_tensors,
) -> dict[str, list[np.ndarray] | str]:
    """:func:`read_tensors` in a child process: OpenVINO can end the process (SIGSEGV) when some
    tensors of a quantised graph are made outputs. A crashed chunk is halved and retried down to
    single tensors; a tensor the engine cannot give maps to the reason instead of its values."""
    context = multiprocessing.get_context('spawn')
    try:
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            job = pool.submit(reader, engine, _with_outputs(model, names), names, feeds, threads)
            per_feed = job.result()
        return {name: [out[i] for out in per_feed] for i, name in enumerate(names)}
    except BrokenProcessPool:
        if len(names) == 1:
            return {names[0]: f'{engine} ended its process reading this tensor'}
        half = len(names) // 2
        return {
            **read_isolated(engine, model, names[:half], feeds, threads, reader),
            **read_isolated(engine, model, names[half:], feeds, threads, reader),
        }


def _read(
    engine: str,
    model: onnx.ModelProto,
    names: list[str],
    feeds: list[dict[str, np.ndarray]],
    threads: int | None,
) -> dict[str, list[np.ndarray] | str]:
    if engine == 'onnxruntime':  # in this process: ONNX Runtime reports errors, it does not crash
        per_feed = read_tensors(engine, _with_outputs(model, names), names, feeds, threads)
        return {name: [out[i] for out in per_feed] for i, name in enumerate(names)}
    return read_isolated(engine, model, names, feeds, threads)


def compare_models(
    ref: onnx.ModelProto,
    test: onnx.ModelProto,
    feeds: Iterable[dict[str, np.ndarray]],
    chunk: int = 32,
    threads: int | None = None,
    logger: Callable[[str], None] | None = None,
    engines: tuple[str, str] = ('onnxruntime', 'onnxruntime'),
) -> list[LayerDivergence]:
    """Compare every tensor both models produce, ``chunk`` at a time, over ``feeds`` (a list: each
    chunk runs every feed on both models, on ``engines`` (reference, candidate): see
    :func:`make_runner`); the layers in ``ref``'s order, with their jumps."""
    feeds = list(feeds)
    pairs = comparable_tensors(ref, test)
    layers = [
        LayerDivergence(
            i, name, other, module_name(node), node.op_type, TensorStats(), [*node.input]
        )
        for i, (name, other, node) in enumerate(pairs)
    ]
    for layer in layers:  # graph-level nodes (no module scope) keep their node name
        layer.scoped = not layer.module.startswith('/')
    for start in range(0, len(layers), chunk):
        part = layers[start : start + chunk]
        ref_out = _read(engines[0], ref, [layer.tensor for layer in part], feeds, threads)
        test_out = _read(engines[1], test, [layer.test_tensor for layer in part], feeds, threads)
        for layer in part:
            a, b = ref_out[layer.tensor], test_out[layer.test_tensor]
            if isinstance(a, str) or isinstance(b, str):
                layer.stats.mismatch = a if isinstance(a, str) else b
                continue
            for ref_tensor, test_tensor in zip(a, b):
                layer.stats.add(ref_tensor, test_tensor)
        del ref_out, test_out
        if logger:
            logger(f'compared {min(start + chunk, len(layers))}/{len(layers)} tensors')
    add_jumps(layers, ref.graph)
    return layers


def add_jumps(layers: list[LayerDivergence], graph: onnx.GraphProto) -> None:
    """Each layer's SQNR loss against what reaches it: the lowest SQNR of any compared tensor
    upstream of its inputs (through tensors that are not compared, such as indices; graph
    inputs and weights count as exact)."""
    sqnr = {layer.tensor: layer.stats.sqnr_db for layer in layers if not layer.stats.mismatch}
    upstream: dict[str, float] = {}
    for node in graph.node:
        before = min((upstream.get(i, EXACT_DB) for i in node.input if i), default=EXACT_DB)
        for out in node.output:
            upstream[out] = min(before, sqnr.get(out, EXACT_DB))
            upstream[f'{out} before'] = before
    for layer in layers:
        if not layer.stats.mismatch:
            layer.jump_db = upstream.get(f'{layer.tensor} before', EXACT_DB) - layer.stats.sqnr_db


def top_jumps(
    layers: list[LayerDivergence], top: int = 10, modules_only: bool = True
) -> list[LayerDivergence]:
    """The layers that lose the most SQNR, largest first; with ``modules_only``, only nodes a
    module made (not the graph-level post-processing, whose top-k picks change discontinuously
    with any error before it)."""
    ranked = [
        layer
        for layer in layers
        if not layer.stats.mismatch and layer.jump_db > 0 and (layer.scoped or not modules_only)
    ]
    return sorted(ranked, key=lambda layer: -layer.jump_db)[:top]
