"""INT8 ONNX files: static QDQ quantisation with ``onnxruntime.quantization``.

One quantisation for every engine that reads INT8 ONNX (ONNX Runtime's CPU provider fuses the
``DequantizeLinear -> Conv -> QuantizeLinear`` groups into integer kernels; OpenVINO turns the same
pairs into ``FakeQuantize`` and runs them in INT8). We never write a quantiser: the work is
ONNX Runtime's ``quant_pre_process`` (shape inference and graph optimisation) followed by
``quantize_static`` in QDQ format with per-tensor activation ranges from a calibration run.

What is quantised is decided here, once, on the graph (:func:`int8_node_plan`):

* the *feature extractor*: every Conv / ConvTranspose / Gemm / MatMul that does not follow
  TopK, NonMaxSuppression or RoiAlign, and the float ops feeding them (residual ``Add``,
  ``Relu``, ``MaxPool``, FPN ``Resize`` / ``Add``): the same region the FP16 path
  (:mod:`.mixed_precision`) lowers;
* optionally (``roi_heads=True``) the convolutions and matrix products of the RoI heads after
  RoiAlign (box-head FCs, mask-head convs): only their inputs are rounded, RoiAlign itself and
  everything around it stay float;
* never: anchor generation, box decoding, score activations, TopK, NMS, RoiAlign, mask paste,
  output padding -- everything after the last head convolution stays float32. The outputs of the
  head's last convolutions (class logits, box deltas) are not rounded either: the QDQ pair on
  them is removed, so scores and boxes reach the post-processing in full precision.

Graph inputs and outputs keep their float32 / int64 types.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .mixed_precision import COMPUTE_OPS, POSTPROCESS_OPS, low_precision_nodes

#: calibration methods of ``onnxruntime.quantization.CalibrationMethod`` by their CLI names
CALIBRATION_METHODS = ('minmax', 'entropy', 'percentile')
#: weight types of ``QuantizeSettings.weights`` (``auto`` resolves to one, per CPU)
WEIGHT_TYPES = ('int8', 'uint8')
WEIGHT_CHOICES = ('auto', *WEIGHT_TYPES)
#: op types inside the feature extractor that keep INT8 flowing between convolutions
#: (everything else there -- e.g. a Sigmoid -- is left float)
GLUE_OPS = frozenset(('Add', 'Relu', 'MaxPool', 'Resize', 'Concat', 'Clip'))


@dataclass(frozen=True)
class QuantizeSettings:
    """How a file is quantised (recorded in its model spec as ``extra['int8']``).

    Attributes:
        method: activation-range calibration, one of :data:`CALIBRATION_METHODS`.
        per_channel: one weight scale per output channel (else one per tensor).
        roi_heads: also quantise the RoI heads' convolutions and FCs (two-stage models).
        exclude: node names kept in float (found by the sensitivity search, or given).
        percentile: the percentile of the ``percentile`` method.
        float_head_outputs: keep the head's last convolutions float (their outputs -- class
            logits, box deltas -- unrounded); costs speed (those convolutions are large).
        weights: ``int8`` (symmetric, zero point 0) or ``uint8`` (zero point 128).
            ONNX Runtime's uint8 x int8 kernels on x86 CPUs without VNNI or AMX (AVX2 only) add
            products in pairs into int16 with saturation (``VPMADDUBSW``), which full-range
            int8 weights can overflow; its uint8 x uint8 kernels widen to int16 first and do not
            saturate. Measured on the bundled models on such a CPU (Zen 3): int8 weights lose
            0.4 (RetinaNet) / 0.3 (Mask R-CNN) box AP in ONNX Runtime, uint8 ones lose nothing.
            OpenVINO runs only int8 weights in INT8 (uint8 ones in FP32, so its backend refuses
            such a file). :func:`resolve_weights` picks one for the CPU at hand.
        reduce_range: weights in 7 bits, the other cure for that saturation (ONNX Runtime's
            documented advice); it costs Mask R-CNN 0.6 mask AP on both engines.
    """

    method: str = 'minmax'
    per_channel: bool = True
    weights: str = 'int8'
    reduce_range: bool = False
    roi_heads: bool = True
    float_head_outputs: bool = False
    exclude: tuple[str, ...] = ()
    percentile: float = 99.999

    def __post_init__(self):
        if self.weights not in WEIGHT_TYPES:
            raise ValueError(
                f'weights must be one of {", ".join(WEIGHT_TYPES)}, not {self.weights!r}'
            )


def resolve_weights(weights: str) -> tuple[str, str]:
    """``(weight type, why)`` for ``weights`` (``auto``, ``int8`` or ``uint8``). ``auto`` is int8,
    the fast path of VNNI / AMX CPUs and the one OpenVINO runs in INT8, except on an x86 CPU
    whose ONNX Runtime kernels would saturate with it (:func:`deploy.cpu.saturating_int8_gemm`)."""
    from ..cpu import saturating_int8_gemm

    if weights != 'auto':
        return weights, 'asked for'
    if saturating_int8_gemm():
        return 'uint8', (
            'auto: this CPU has no VNNI or AMX, and ONNX Runtime sums uint8 x int8 products '
            'in int16 with saturation there; uint8 weights avoid that, but OpenVINO runs them '
            'only in FP32 (--weights int8 makes an OpenVINO INT8 file)'
        )
    return (
        'int8',
        'auto: this CPU has integer dot-product instructions (VNNI or AMX), or is not x86',
    )


@dataclass
class Int8Plan:
    """The node names that get QDQ (``quantize``) and the float compute ops left out."""

    quantize: list[str] = field(default_factory=list)
    compute: list[str] = field(default_factory=list)
    float_compute: list[str] = field(default_factory=list)
    #: compute ops after RoiAlign (RoI heads)
    roi_compute: list[str] = field(default_factory=list)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        types[value.name] = value.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    return types


def int8_node_plan(model: onnx.ModelProto, settings: QuantizeSettings) -> Int8Plan:
    """Which nodes of ``model`` (after ``quant_pre_process``, every node named) to quantise."""
    nodes = list(model.graph.node)
    types = _elem_types(model)
    kinds = [n.op_type for n in nodes]

    def follows(i: int, pos: int, name: str) -> bool:
        # Backwards through float activations only (never weights' shape arithmetic), and
        # only into ops whose INT8 form exists (so the QDQ chain is unbroken).
        return types.get(name) == onnx.TensorProto.FLOAT

    feature = low_precision_nodes(
        kinds,
        [list(n.input) for n in nodes],
        [list(n.output) for n in nodes],
        COMPUTE_OPS,
        POSTPROCESS_OPS,
        follows,
    )
    compute = [i for i, kind in enumerate(kinds) if kind in COMPUTE_OPS]
    chosen = {i for i in feature if kinds[i] in COMPUTE_OPS or kinds[i] in GLUE_OPS}
    if settings.roi_heads:
        chosen.update(compute)
    excluded = set(settings.exclude) | _single_channel_convs(model)
    plan = Int8Plan()
    for i in sorted(chosen):
        if nodes[i].name not in excluded:
            plan.quantize.append(nodes[i].name)
    plan.compute = [nodes[i].name for i in compute]
    plan.roi_compute = [nodes[i].name for i in compute if i not in feature]
    quantized = set(plan.quantize)
    plan.float_compute = [name for name in plan.compute if name not in quantized]
    return plan


def _single_channel_convs(model: onnx.ModelProto) -> set[str]:
    """Convolutions with one output channel (YOLOX's objectness convs): ONNX Runtime 1.32 aborts
    (a C++ assertion, no Python error) building a session around such a convolution in QDQ form,
    with per-channel and per-tensor weights alike. They stay float, at no measurable cost."""
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return {
        n.name
        for n in model.graph.node
        if n.op_type == 'Conv' and len(n.input) > 1 and dims.get(n.input[1], (0,))[0] == 1
    }


class CalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over prepared input dicts."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]]):
        self._batches: Sequence[dict[str, np.ndarray]] = list(batches)
        self._iter: Iterator | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = iter(self._batches)
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def preprocess_for_quantization(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's quantisation pre-processing (``quant_pre_process``): ONNX shape inference
    and ORT's basic graph optimisations (Conv+BN folding, constant folding), then names for every
    node. Symbolic shape inference is skipped: it cannot type our custom-op outputs (NMS) and adds
    nothing a static quantisation needs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix='int8_') as tmp:
        src, dst = Path(tmp) / 'in.onnx', Path(tmp) / 'pre.onnx'
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        pre = onnx.load(str(dst))
    seen: set[str] = set()
    for i, node in enumerate(pre.graph.node):
        if not node.name or node.name in seen:
            node.name = f'{node.op_type}_{i}'
        seen.add(node.name)
    # quant_pre_process drops metadata_props: the caller writes the spec back.
    return pre


def quantize_qdq(
    model: onnx.ModelProto,
    batches: Sequence[dict[str, np.ndarray]],
    settings: QuantizeSettings,
    calibration_cache: str | Path | None = None,
) -> tuple[onnx.ModelProto, Int8Plan]:
    """Quantise a pre-processed model (:func:`preprocess_for_quantization`) to static QDQ INT8
    with activation ranges calibrated on ``batches`` (the graph's input dicts).

    Activations are uint8 (asymmetric); weights symmetric, int8 (the pairing ONNX Runtime's
    VNNI / AMX kernels and OpenVINO's CPU plugin execute natively) or uint8 (``settings.weights``).
    ``calibration_cache``: a JSON file of the calibrated ranges, written by the first call and
    read by later ones (a retry with other layers excluded then skips the calibration run).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if settings.method not in CALIBRATION_METHODS:
        raise ValueError(f'unknown calibration method {settings.method!r}')
    plan = int8_node_plan(model, settings)
    feed_names = {i.name for i in model.graph.input}
    reader = CalibrationReader({k: v for k, v in b.items() if k in feed_names} for b in batches)
    method = {
        'minmax': CalibrationMethod.MinMax,
        'entropy': CalibrationMethod.Entropy,
        'percentile': CalibrationMethod.Percentile,
    }[settings.method]
    extra = dict(
        # Weights symmetric (int8: zero point 0, what integer GEMM kernels want; uint8: 128).
        WeightSymmetric=True,
        ActivationSymmetric=False,
        # Biases as int32 with scale = input scale x weight scale (fused into the integer conv).
        QuantizeBias=True,
    )
    if settings.method == 'percentile':
        extra['CalibPercentile'] = settings.percentile
    with tempfile.TemporaryDirectory(prefix='int8_') as tmp:
        src, dst = Path(tmp) / 'pre.onnx', Path(tmp) / 'int8.onnx'
        onnx.save(model, str(src))
        quantize_static(
            str(src),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if settings.weights == 'uint8' else QuantType.QInt8,
            nodes_to_quantize=plan.quantize,
            calibrate_method=method,
            calibration_providers=['CPUExecutionProvider'],
            extra_options=extra,
            calibration_cache_path=calibration_cache,
        )
        quantized = onnx.load(str(dst))
    # The RoI heads' last layers are small (a few FCs / a 1x1 conv on 100-1000 RoIs): their
    # outputs (class scores, box deltas, mask logits) stay unrounded at no cost. The dense heads'
    # last convolutions are large (RetinaNet's class conv is a quarter of its head): rounded by
    # default, float with ``float_head_outputs``.
    sources = None if settings.float_head_outputs else set(plan.roi_compute)
    keep_head_outputs_float(quantized, set(plan.quantize), sources)
    return quantized, plan


def keep_head_outputs_float(
    model: onnx.ModelProto, quantized_nodes: set[str], sources: set[str] | None = None
) -> int:
    """Remove the ``QuantizeLinear -> DequantizeLinear`` pair on every activation that only float
    nodes read (a head's class logits and box deltas, a RoI head's outputs): rounding it to 8 bits
    would help no integer kernel and would coarsen the scores and boxes. ``sources``: only where
    one of these nodes produces the activation (``None``: anywhere). Returns how many."""
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    drop, rename = [], {}
    for q in graph.node:
        if q.op_type != 'QuantizeLinear':
            continue
        src = producer.get(q.input[0])
        if src is None or src.op_type in ('QuantizeLinear', 'DequantizeLinear'):
            continue
        if sources is not None and src.name not in sources:
            continue
        dqs = consumers.get(q.output[0], [])
        if not dqs or any(d.op_type != 'DequantizeLinear' for d in dqs):
            continue
        readers = [r for d in dqs for r in consumers.get(d.output[0], [])]
        if any(r.name in quantized_nodes for r in readers):
            continue
        graph_outputs = {o.name for o in graph.output}
        if any(d.output[0] in graph_outputs for d in dqs):
            continue
        drop.append(q)
        for d in dqs:
            drop.append(d)
            rename[d.output[0]] = q.input[0]
    for node in graph.node:
        for pos, name in enumerate(node.input):
            if name in rename:
                node.input[pos] = rename[name]
    for node in drop:
        graph.node.remove(node)
    return sum(1 for n in drop if n.op_type == 'QuantizeLinear')


def settings_record(settings: QuantizeSettings, **facts) -> dict:
    """The ``extra['int8']`` record of a quantised file's spec (JSON values only)."""
    record = asdict(settings)
    record['exclude'] = list(settings.exclude)
    record.update(facts)
    json.dumps(record)  # fail here, not when the spec is written
    return record
