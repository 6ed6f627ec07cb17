"""Optional onnxsim pass. Dynamo graphs are already optimised; legacy graphs shrink a lot."""

from pathlib import Path

import onnx

from ..errors import ExportError
from ..fileio import staged


def simplify_onnx(path: str | Path, dynamic: bool = False, logger=print) -> None:
    """Simplify ``path`` in place (atomically), keeping metadata and symbolic input dims."""
    try:
        import onnxsim
    except ImportError:
        raise ExportError('--simplify needs onnxsim: pip install onnxsim') from None
    path = Path(path)
    model = onnx.load(str(path))
    metadata = list(model.metadata_props)
    before = len(model.graph.node)
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        logger('warning: onnxsim could not validate the simplified model; keeping the original')
        return
    if dynamic:
        for old, new in zip(model.graph.input, simplified.graph.input):
            old_dims = [d.dim_param for d in old.type.tensor_type.shape.dim]
            new_dims = [d.dim_param for d in new.type.tensor_type.shape.dim]
            if old_dims != new_dims:
                raise ExportError(
                    f'onnxsim changed the dynamic dims of input {old.name}: '
                    f'{old_dims} -> {new_dims}'
                )
    del simplified.metadata_props[:]
    simplified.metadata_props.extend(metadata)
    with staged(path) as tmp:
        onnx.save(simplified, str(tmp))
    logger(f'simplified: {before} -> {len(simplified.graph.node)} nodes')
