"""One digest of everything a model file makes a runtime read: the ``.onnx`` file and every
external data file its tensors name. Caches of converted models (OpenVINO IR, TensorRT engines)
are keyed on it, so replacing the weights beside a graph can never bring back the old result."""

import hashlib
from pathlib import Path


def _external_locations(model_file: Path) -> list[str]:
    """The external data files the tensors of ``model_file`` name (sorted, unique)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    try:
        model = onnx.load(str(model_file), load_external_data=False)
    except Exception:  # not an ONNX file: the runtime that reads it reports why
        return []
    locations = set()
    for tensor in _get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            if 'location' in entries:
                locations.add(entries['location'])
    return sorted(locations)


def _update(digest, path: Path, chunk: int = 1 << 20) -> None:
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            digest.update(block)


def model_digest(model_file: str | Path) -> str:
    """SHA-256 (hex) of ``model_file`` and of each external data file it names (by name and
    content; a missing one counts as missing), in a fixed order."""
    model_file = Path(model_file)
    digest = hashlib.sha256()
    _update(digest, model_file)
    for location in _external_locations(model_file):
        digest.update(b'\0external\0' + location.encode() + b'\0')
        data = model_file.parent / location
        if data.is_file():
            _update(digest, data)
        else:
            digest.update(b'\0missing\0')
    return digest.hexdigest()
