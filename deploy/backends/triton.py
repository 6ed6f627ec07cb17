"""A model served by a Triton Inference Server, behind the backend interface (HTTP or gRPC).

Each image of a batch is one request, ``concurrency`` of them in flight; the server's dynamic
batcher forms the batches. An image is sent at its own padded size (the batch's padding cropped
away), so the server sees exactly the input the local backend sees at batch size 1.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import BackendError
from ..spec import ModelSpec
from .base import Backend

PROTOCOLS = ('http', 'grpc')
_NUMPY_TYPES = {'FP32': np.float32, 'UINT8': np.uint8, 'INT64': np.int64, 'INT32': np.int32}


@dataclass(frozen=True)
class TritonOptions:
    """Where the model is served.

    Args:
        url: ``host:port`` of the server's HTTP or gRPC endpoint.
        model_name: the model's name on the server.
        protocol: ``http`` or ``grpc``.
        concurrency: requests in flight at once.
        timeout_s: longest wait for one request, seconds.
    """

    url: str
    model_name: str
    protocol: str = 'http'
    concurrency: int = 1
    timeout_s: float = 60.0


def make_client(options: TritonOptions):
    """A ``tritonclient`` client of the protocol asked for (one per thread: neither is shared)."""
    try:
        if options.protocol == 'grpc':
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
    except ImportError as err:
        raise BackendError(
            f'the triton backend needs tritonclient[http,grpc] (pip install it): {err}'
        ) from None
    if options.protocol == 'grpc':
        return client_module.InferenceServerClient(options.url)
    return client_module.InferenceServerClient(
        options.url, connection_timeout=options.timeout_s, network_timeout=options.timeout_s
    )


def triton_error_types() -> tuple[type, ...]:
    from tritonclient.utils import InferenceServerException

    return (InferenceServerException, OSError)


class TritonBackend(Backend):
    """Runs a model that a Triton server serves (a repository from ``tools/deploy2triton.py``:
    its configuration carries the model spec)."""

    name = 'triton'

    def __init__(self, options: TritonOptions):
        if options.protocol not in PROTOCOLS:
            raise BackendError(f'--protocol {options.protocol!r}: choose {" or ".join(PROTOCOLS)}')
        if options.concurrency < 1:
            raise BackendError(f'--concurrency must be at least 1, got {options.concurrency}')
        self.options = options
        self._local = threading.local()
        config = self._model_config(self._client())
        if int(config.get('max_batch_size', 0)) < 1:
            raise BackendError(
                f'{options.model_name} on {options.url} has no batch axis (max_batch_size 0): '
                'serve a --dynamic-export file'
            )
        stored = config.get('parameters', {}).get('model_spec', {}).get('string_value')
        self.spec = ModelSpec.from_json(stored) if stored else None
        self.input_names = tuple(i['name'] for i in config['input'])
        self.output_names = tuple(o['name'] for o in config['output'])
        self._data_types = {
            i['name']: i['data_type'].removeprefix('TYPE_') for i in config['input']
        }
        self._pool = ThreadPoolExecutor(options.concurrency) if options.concurrency > 1 else None

    def _client(self):
        client = getattr(self._local, 'client', None)
        if client is None:
            client = self._local.client = make_client(self.options)
        return client

    def _model_config(self, client) -> dict:
        """The served model's configuration (JSON), after checking the server and the model."""
        where = f'{self.options.url} ({self.options.protocol})'
        try:
            live = client.is_server_live()
        except triton_error_types():
            live = False
        if not live:
            raise BackendError(
                f'no Triton server answers at {where}: start one (README "Serve it") or '
                'check --url and --protocol'
            )
        name = self.options.model_name
        try:
            ready = client.is_model_ready(name)
        except triton_error_types():
            ready = False
        if not ready:
            index = client.get_model_repository_index(**_as_json(self.options))
            names = sorted(
                m['name']
                for m in (index.get('models', index) if isinstance(index, dict) else index)
            )
            raise BackendError(
                f'the server at {where} has no ready model {name!r}; it serves: '
                f'{", ".join(names) or "nothing"}'
            )
        config = client.get_model_config(name, **_as_json(self.options))
        return config.get('config', config)

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise BackendError(f'{self.options.model_name} takes inputs {missing} not given')
        images = [self._one_image(inputs, i) for i in range(len(inputs[self.input_names[0]]))]
        if self._pool is None:
            answers = [self._infer(image) for image in images]
        else:
            answers = list(self._pool.map(self._infer, images))
        return {n: _stack([a[n] for a in answers], n) for n in self.output_names}

    def _one_image(self, inputs: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        """Image ``index`` of the batch, the batch's extra padding cropped away (the test
        pipeline pads each image to a multiple of ``size_divisor``, then the batch to its
        largest image: what remains is the input of a batch of one)."""
        one = {n: inputs[n][index : index + 1] for n in self.input_names}
        spec = self.spec
        croppable = (
            spec is not None
            and spec.inputs.dynamic_size
            and spec.preprocess.center_pad is None
            and 'img_shape' in one
            and 'input' in one
        )
        if croppable:
            divisor = spec.preprocess.size_divisor or 1
            height, width = (int(v) for v in one['img_shape'][0])
            padded_h, padded_w = -(-height // divisor) * divisor, -(-width // divisor) * divisor
            one['input'] = one['input'][:, :, :padded_h, :padded_w]
        return one

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        module = _client_module(self.options.protocol)
        request = []
        for name in self.input_names:
            array = np.ascontiguousarray(inputs[name], _NUMPY_TYPES[self._data_types[name]])
            tensor = module.InferInput(name, list(array.shape), self._data_types[name])
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        wanted = [module.InferRequestedOutput(n) for n in self.output_names]
        extra = (
            {'client_timeout': self.options.timeout_s} if self.options.protocol == 'grpc' else {}
        )
        try:
            result = self._client().infer(self.options.model_name, request, outputs=wanted, **extra)
        except triton_error_types() as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BackendError(
                f'{self.options.model_name} on {self.options.url}: {message}'
            ) from None
        return {n: result.as_numpy(n) for n in self.output_names}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _client_module(protocol: str):
    if protocol == 'grpc':
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def _as_json(options: TritonOptions) -> dict:
    """gRPC answers protobuf messages unless asked for JSON; HTTP answers JSON."""
    return {'as_json': True} if options.protocol == 'grpc' else {}


def _stack(parts: list[np.ndarray], name: str) -> np.ndarray:
    """Concatenate per-image outputs whose detection axis may differ: pad to the longest (label
    -1 and zeros are the padded rows' values)."""
    if len({p.shape[1:] for p in parts}) > 1:
        rows = max(p.shape[1] for p in parts)
        fill = -1 if name == 'labels' else 0
        parts = [
            np.pad(
                p, [(0, 0), (0, rows - p.shape[1])] + [(0, 0)] * (p.ndim - 2), constant_values=fill
            )
            for p in parts
        ]
    return np.concatenate(parts)
