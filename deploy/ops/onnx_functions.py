"""What the ops' onnxscript functions share: their domain and their opset.

Ops whose translation needs control flow (corner pooling's and soft-NMS's ``Loop``) are written
once, as onnxscript functions in the :data:`FUNCTION_DOMAIN`. The exporters collect every op's
translation in :mod:`deploy.export.onnx_ops`, which also inlines these functions, so every saved
graph holds the default ONNX domain only.
"""

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
