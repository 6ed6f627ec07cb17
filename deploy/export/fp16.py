"""FP16 ONNX files: an exported FP32 file converted in place to mixed precision.

The conversion is :func:`deploy.onnx_graph.mixed_precision.convert_to_mixed_fp16`, the one the
TensorRT 11 path uses too: convolutions and what feeds them run in FP16; box
decoding, top-k, NMS, RoIAlign and the RoI / mask heads after it stay FP32, and the graph's inputs
and outputs stay float32. The model spec inside the file records ``precision='fp16'``.
"""

from pathlib import Path

import onnx

from ..errors import ExportError
from ..fileio import staged
from ..onnx_graph.mixed_precision import CONV_OPS, convert_to_mixed_fp16
from ..spec import read_onnx_spec, write_onnx_spec


def convert_file_to_fp16(path: str | Path) -> dict:
    """Convert ``path`` to mixed FP16 in place (atomically); return node counts by precision."""
    path = Path(path)
    model = onnx.load(str(path))
    spec = read_onnx_spec(model)
    # Convolutions (and what feeds them) only: attention MatMuls in FP16 crash ONNX Runtime
    # 1.32's CPU optimiser (a segmentation fault at session creation, found on DETR), and on a
    # GPU the convolutions are where FP16 pays. TensorRT engines convert MatMuls too.
    half = convert_to_mixed_fp16(model, compute_ops=CONV_OPS)
    if not any(init.data_type == onnx.TensorProto.FLOAT16 for init in half.graph.initializer):
        raise ExportError(
            f'--precision fp16: {path.name} has no convolution or matrix product to run in FP16'
        )
    if spec is not None:
        write_onnx_spec(half, spec.replace(precision='fp16'))
    with staged(path) as tmp:
        onnx.save(half, str(tmp))
    casts = sum(n.op_type == 'Cast' for n in half.graph.node)
    return dict(nodes=len(half.graph.node), casts=casts)
