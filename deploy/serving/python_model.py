"""The Triton python-backend model of a repository written with ``--backend python``.

It runs inside the server's Python stub (``triton_python_backend_utils`` exists only there) and
serves the version folder's ``model.onnx`` with our own backend classes, so the server computes
exactly what the local backend computes. Requests of one shape that the dynamic batcher hands over
together run as one batch; a failing batch answers each of its requests with the error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from ..backends import build_backend


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args['model_config'])
        params = {k: v['string_value'] for k, v in config.get('parameters', {}).items()}
        folder = Path(args['model_repository']) / args['model_version']
        threads = int(params.get('threads') or 0) or None
        self.backend = build_backend(
            params.get('runtime', 'onnxruntime'), folder / 'model.onnx', num_threads=threads
        )
        self.input_names = [i['name'] for i in config['input']]
        self.output_names = [o['name'] for o in config['output']]

    def execute(self, requests: list) -> list:
        arrays = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names}
            for r in requests
        ]
        responses: list = [None] * len(requests)
        for indices in _same_shape_groups(arrays):
            for index, response in zip(indices, self._run_group([arrays[i] for i in indices])):
                responses[index] = response
        return responses

    def _run_group(self, group: list[dict]) -> list:
        sizes = [len(next(iter(a.values()))) for a in group]
        batch = {n: np.concatenate([a[n] for a in group]) for n in self.input_names}
        try:
            outputs = self.backend(batch)
        except Exception as err:  # one line to each client instead of a dead model instance
            error = pb_utils.TritonError(f'{type(err).__name__}: {err}')
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in group]
        responses, start = [], 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(outputs[n][start : start + size]))
                for n in self.output_names
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses


def _same_shape_groups(arrays: list[dict]) -> list[list[int]]:
    """Request indices grouped by the shapes of their inputs without the batch axis."""
    groups: dict[tuple, list[int]] = {}
    for index, inputs in enumerate(arrays):
        key = tuple((n, a.shape[1:], a.dtype.str) for n, a in sorted(inputs.items()))
        groups.setdefault(key, []).append(index)
    return list(groups.values())
