"""ONNX Runtime backend (CPU or CUDA execution provider)."""

from pathlib import Path

import numpy as np

from ..errors import BackendError
from ..spec import METADATA_KEY, ModelSpec
from .base import Backend


class OnnxRuntimeBackend(Backend):
    """Runs an exported ONNX file with a stock ``onnxruntime`` (no custom-op library needed).

    Args:
        model_file: the ``.onnx`` file.
        device: ``'cpu'`` or ``'cuda'`` / ``'cuda:N'`` (needs ``onnxruntime-gpu``).
        num_threads: intra-op threads (``None``: ONNX Runtime's default, all cores).
    """

    name = 'onnxruntime'

    def __init__(self, model_file: str | Path, device: str = 'cpu', num_threads: int | None = None):
        import onnxruntime as ort

        model_file = Path(model_file)
        if not model_file.is_file():
            raise BackendError(f'ONNX file not found: {model_file}')
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle intra-op threads would spin for work after each run, taking the cores that our
        # pre/post-processing and the data-loading workers need between runs.
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        providers = ['CPUExecutionProvider']
        if device.startswith('cuda'):
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise BackendError(
                    'device cuda asked for, but this onnxruntime has no CUDA '
                    'provider: install onnxruntime-gpu (and uninstall onnxruntime)'
                )
            device_id = int(device.split(':')[1]) if ':' in device else 0
            providers = [
                ('CUDAExecutionProvider', {'device_id': device_id}),
                'CPUExecutionProvider',
            ]
        try:
            self.session = ort.InferenceSession(str(model_file), options, providers=providers)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            msg = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise BackendError(f'ONNX Runtime cannot load {model_file}: {msg}') from None
        self.model_file = model_file
        # The spec travels in the file's metadata_props, which the session has already read.
        stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.spec = ModelSpec.from_json(stored, str(model_file)) if stored else None
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self._input_rules = {
            i.name: (i.type, [d if isinstance(d, int) else None for d in i.shape])
            for i in self.session.get_inputs()
        }

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: np.ascontiguousarray(inputs[name]) for name in self.input_names}
        for name, array in feed.items():
            self._check_input(name, array)
        return dict(zip(self.output_names, self.session.run(list(self.output_names), feed)))

    def _check_input(self, name: str, array: np.ndarray) -> None:
        """Rank, fixed dims and element type as one clear line, not ONNX Runtime's message."""
        onnx_type, dims = self._input_rules[name]
        expected = {'tensor(uint8)': np.uint8, 'tensor(float)': np.float32}.get(onnx_type)
        wrong_dims = len(dims) != array.ndim or any(
            d is not None and d != s for d, s in zip(dims, array.shape)
        )
        if wrong_dims or (expected is not None and array.dtype != expected):
            want = 'x'.join('?' if d is None else str(d) for d in dims)
            raise BackendError(
                f'input {name!r} of {self.model_file.name} is {array.dtype} of shape '
                f'{list(array.shape)}; the model takes {onnx_type[7:-1]} [{want}]'
                + (' (BGR images have 3 channels)' if name == 'image' else '')
            )
