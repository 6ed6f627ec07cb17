"""The ONNX translations of our custom ops for both exporters, and the inlining that leaves only
standard operators in the saved graph.

The torch.export-based exporter inlines the ops' onnxscript functions
(:data:`deploy.ops.onnx_functions.FUNCTION_DOMAIN`) itself; the TorchScript exporter stores them
as model-local functions called from that domain, which :func:`inline_local_functions` expands.
"""

import onnx
import onnx.inliner

from ..ops import corner_pool, multiclass_nms, preprocess, soft_nms


def onnx_translation_table() -> dict:
    """``custom_translation_table`` of ``torch.onnx.export(..., dynamo=True)`` for every op."""
    table = dict(multiclass_nms.onnx_translation_table())
    table.update(preprocess.onnx_translation_table())
    table.update(corner_pool.onnx_translation())
    table.update(soft_nms.onnx_translation())
    return table


def register_legacy_symbolics(opset_version: int) -> None:
    """Register the TorchScript exporter's symbolic functions of every op."""
    multiclass_nms.register_legacy_symbolic(opset_version)
    preprocess.register_legacy_symbolic(opset_version)
    corner_pool.register_legacy_symbolic(opset_version)
    soft_nms.register_legacy_symbolic(opset_version)


def inline_local_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its local functions expanded in place and their domains' imports dropped
    (a model without local functions is returned unchanged)."""
    if not len(model.functions):
        return model
    domains = {f.domain for f in model.functions}
    inlined = onnx.inliner.inline_local_functions(model)
    kept = [o for o in inlined.opset_import if o.domain not in domains]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    return inlined
