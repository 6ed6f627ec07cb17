"""The ONNX translations of our custom ops for both exporters, and the inlining that leaves only
standard operators in the saved graph.

Ops whose translation needs control flow (corner pooling's and soft-NMS's ``Loop``) are written
once, as onnxscript functions in the :data:`FUNCTION_DOMAIN`. The torch.export-based exporter
inlines them itself; the TorchScript exporter stores them as model-local functions called from
that domain, which :func:`inline_local_functions` expands, so every saved graph holds the default
ONNX domain only.
"""

import onnx
import onnx.inliner

#: domain of our onnxscript helper functions (never left in a saved graph)
FUNCTION_DOMAIN = 'deploy.onnx_functions'
#: the opset the onnxscript functions are written in (``Pad`` with ``axes``, ``ReduceMax`` with
#: axes as an input)
FUNCTION_OPSET = 18


def check_function_opset(opset_version: int, op_name: str) -> None:
    """Raise :class:`~deploy.errors.ExportError` when the export's opset is below
    :data:`FUNCTION_OPSET` (the TorchScript exporter would otherwise mix opsets silently)."""
    if opset_version < FUNCTION_OPSET:
        from ..errors import ExportError

        raise ExportError(
            f'{op_name} needs ONNX opset >= {FUNCTION_OPSET}; export with --opset-version '
            f'{FUNCTION_OPSET} or later'
        )


def onnx_translation_table() -> dict:
    """``custom_translation_table`` of ``torch.onnx.export(..., dynamo=True)`` for every op."""
    from . import corner_pool, multiclass_nms, preprocess, soft_nms

    table = dict(multiclass_nms.onnx_translation_table())
    table.update(preprocess.onnx_translation_table())
    table.update(corner_pool.onnx_translation())
    table.update(soft_nms.onnx_translation())
    return table


def register_legacy_symbolics(opset_version: int) -> None:
    """Register the TorchScript exporter's symbolic functions of every op."""
    from . import corner_pool, multiclass_nms, preprocess, soft_nms

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
