"""How much of an ONNX Runtime run is in-graph post-processing, from ORT's own profiler.

A second session is opened with ``SessionOptions.enable_profiling`` (so the timed session is never
slowed by profiling) and with ``optimized_model_filepath``, so that the graph ORT really runs
(after fusion and layout transforms, whose node names the profile uses) can be read back.

Attribution rule, on that optimised graph:

1. *Weighted* nodes: every op whose type contains ``Conv``, ``Gemm`` or ``MatMul`` (``Conv``,
   ``FusedConv``, NCHWc ``Conv``, ``Gemm``, ``FusedMatMul``, ...): the network's arithmetic.
2. *Network* nodes: the weighted nodes and all their ancestors (backbone, neck, head towers, up
   to each head's last Conv), plus the ``ReorderOutput`` layout copies right after them. A walk
   back from a RoI head stops at ``RoiAlign``/``MaxRoiPool``'s ``rois`` input and follows only the
   feature-map input, so the proposal decoding and NMS that choose the RoIs are not swallowed
   into the network.
3. *Post-processing*: every other node: score activations, anchor generation, box decoding
   arithmetic, TopK, NonMaxSuppression, Gather*/Scatter*, Where, padding of the outputs.

The share is ``post-processing kernel time / model_run time``, averaged over the profiled runs
after ``warmup`` runs; ``overhead_ms`` is the part of ``model_run`` outside any node kernel.
"""

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

RULE = (
    'network = Conv/Gemm/MatMul nodes of the ORT-optimised graph and their ancestors '
    '(RoiAlign: feature input only) + ReorderOutput after them; post-processing = all other nodes'
)
_ROI_OPS = {'RoiAlign', 'MaxRoiPool'}


def is_weighted(op_type: str) -> bool:
    return any(key in op_type for key in ('Conv', 'Gemm', 'MatMul'))


def classify_nodes(graph) -> dict[str, str]:
    """``{node name: 'network' | 'postprocess'}`` for an ``onnx.GraphProto`` (rule above)."""
    producer = {}
    for node in graph.node:
        for out in node.output:
            producer[out] = node
    network: set[str] = set()
    stack = [n for n in graph.node if is_weighted(n.op_type)]
    while stack:
        node = stack.pop()
        if node.name in network:
            continue
        network.add(node.name)
        inputs = node.input[:1] if node.op_type in _ROI_OPS else node.input
        stack.extend(producer[i] for i in inputs if i in producer)
    for node in graph.node:
        if node.op_type == 'ReorderOutput' and node.input and node.input[0] in producer:
            if producer[node.input[0]].name in network:
                network.add(node.name)
    return {n.name: 'network' if n.name in network else 'postprocess' for n in graph.node}


def attribute_profile(events: list[dict], classes: dict[str, str], warmup: int = 0) -> dict:
    """Sum node kernel times per class over the ``model_run`` events after the first ``warmup``.

    Returns per-run means in milliseconds: ``run_ms``, ``network_ms``, ``postprocess_ms``,
    ``unattributed_ms`` (nodes missing from the graph), ``overhead_ms``, the share
    ``postprocess_share = postprocess_ms / run_ms``, the post-processing ms per op type and
    ``by_op_ms``, the ms of every op type (fused ORT kernels such as ``QLinearConv``).
    """
    runs = sorted(
        (e for e in events if e.get('cat') == 'Session' and e.get('name') == 'model_run'),
        key=lambda e: e['ts'],
    )[warmup:]
    if not runs:
        raise ValueError('the profile has no model_run events after warm-up')
    windows = [(r['ts'], r['ts'] + r['dur']) for r in runs]
    totals = defaultdict(float)
    post_by_op = defaultdict(float)
    by_op = defaultdict(float)
    suffix = '_kernel_time'
    for event in events:
        if event.get('cat') != 'Node' or not event.get('name', '').endswith(suffix):
            continue
        ts = event['ts']
        if not any(start <= ts <= end for start, end in windows):
            continue
        kind = classes.get(event['name'][: -len(suffix)], 'unattributed')
        totals[kind] += event['dur']
        by_op[event.get('args', {}).get('op_name', '?')] += event['dur']
        if kind == 'postprocess':
            post_by_op[event.get('args', {}).get('op_name', '?')] += event['dur']
    n = len(runs)
    run_us = sum(r['dur'] for r in runs)
    nodes_us = sum(totals.values())
    ms = 1e-3 / n
    return dict(
        runs=n,
        run_ms=run_us * ms,
        network_ms=totals['network'] * ms,
        postprocess_ms=totals['postprocess'] * ms,
        unattributed_ms=totals['unattributed'] * ms,
        overhead_ms=max(run_us - nodes_us, 0.0) * ms,
        postprocess_share=totals['postprocess'] / run_us if run_us else 0.0,
        postprocess_by_op_ms={
            k: v * ms for k, v in sorted(post_by_op.items(), key=lambda kv: -kv[1])
        },
        # every node kernel by op type: which kernels ran (QLinearConv = INT8, FusedConv = FP32)
        by_op_ms={k: v * ms for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        rule=RULE,
    )


def profile_onnxruntime(
    model_file: str | Path,
    inputs: dict[str, np.ndarray],
    num_threads: int | None = None,
    providers=None,
    warmup: int = 2,
    iters: int = 5,
) -> dict:
    """Profile ``iters`` runs of ``model_file`` on ``inputs`` and attribute the node time.

    The session mirrors :class:`deploy.backends.onnxruntime.OnnxRuntimeBackend` (``ORT_ENABLE_ALL``,
    ``intra_op_num_threads = num_threads``, one inter-op thread). Returns
    :func:`attribute_profile`'s dict plus the graph's node counts per class.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix='ort_profile_') as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, 'profile')
        optimized = os.path.join(tmp, 'optimized.onnx')
        options.optimized_model_filepath = optimized
        session = ort.InferenceSession(
            str(model_file), options, providers=providers or ['CPUExecutionProvider']
        )
        feed = {i.name: np.ascontiguousarray(inputs[i.name]) for i in session.get_inputs()}
        for _ in range(warmup + iters):
            session.run(None, feed)
        profile_file = session.end_profiling()
        with open(profile_file) as f:
            events = json.load(f)
        graph = onnx.load(optimized, load_external_data=False).graph
    classes = classify_nodes(graph)
    result = attribute_profile(events, classes, warmup=warmup)
    result['nodes'] = dict(
        network=sum(v == 'network' for v in classes.values()),
        postprocess=sum(v == 'postprocess' for v in classes.values()),
    )
    return result
