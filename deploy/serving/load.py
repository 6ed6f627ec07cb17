"""Bounded load on a served model: clients at several concurrencies, each level limited in time
and in requests, reporting throughput and latency percentiles.

Every request is one image (the test pipeline's input for ``image``), sent by ``concurrency``
threads that each wait for their answer before sending again (a closed loop, as Triton's
``perf_analyzer`` does by default). Only the given server is addressed.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..backends.triton import TritonBackend, TritonOptions
from ..errors import ConfigError

#: hard limits of one level, whatever is asked
MAX_SECONDS = 120.0
MAX_REQUESTS = 100_000


@dataclass(frozen=True)
class LoadOptions:
    """One measurement: ``concurrencies`` levels of at most ``seconds`` and ``max_requests``."""

    concurrencies: tuple[int, ...] = (1, 2, 4, 8)
    seconds: float = 10.0
    max_requests: int = 2000
    warmup: int = 2  # requests per client before the clock starts

    def check(self) -> None:
        if not self.concurrencies or min(self.concurrencies) < 1 or max(self.concurrencies) > 64:
            raise ConfigError('--concurrency levels must be between 1 and 64')
        if not 0 < self.seconds <= MAX_SECONDS:
            raise ConfigError(f'--seconds must be in (0, {MAX_SECONDS:.0f}], got {self.seconds}')
        if not 0 < self.max_requests <= MAX_REQUESTS:
            raise ConfigError(f'--max-requests must be in [1, {MAX_REQUESTS}]')


@dataclass(frozen=True)
class LevelResult:
    model: str
    concurrency: int
    requests: int
    seconds: float
    throughput: float  # images (= requests) per second
    p50_ms: float
    p90_ms: float
    p99_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def image_inputs(spec, image: str | Path) -> dict[str, np.ndarray]:
    """The graph inputs of one image, as the evaluation pipeline makes them."""
    from ..datasets.pipeline import DecodedImagePipeline, TestPipeline, collate, network_inputs

    if spec.inputs.layout == 'bgr_uint8':
        pipeline = DecodedImagePipeline()
    else:
        fixed = None if spec.inputs.dynamic_size else spec.inputs.static_shape
        pipeline = TestPipeline(spec.preprocess, fixed_shape=fixed)
    return network_inputs(*collate([pipeline(str(image))]))


def run_level(
    backend: TritonBackend, inputs, concurrency: int, options: LoadOptions
) -> LevelResult:
    """``concurrency`` closed-loop clients until the time or the request budget is spent."""
    budget = -(-options.max_requests // concurrency)  # per client
    latencies: list[list[float]] = [[] for _ in range(concurrency)]

    def client(index: int, deadline: float | None, count: int) -> None:
        for _ in range(count):
            if deadline is not None and time.monotonic() >= deadline:
                return
            start = time.perf_counter()
            backend(inputs)
            if deadline is not None:
                latencies[index].append(time.perf_counter() - start)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: client(i, None, options.warmup), range(concurrency)))
        start = time.monotonic()
        deadline = start + options.seconds
        list(pool.map(lambda i: client(i, deadline, budget), range(concurrency)))
        elapsed = time.monotonic() - start
    done = np.concatenate([np.asarray(x) for x in latencies]) * 1000.0
    p50, p90, p99 = np.percentile(done, (50, 90, 99)) if len(done) else (0.0, 0.0, 0.0)
    return LevelResult(
        backend.options.model_name,
        concurrency,
        len(done),
        round(elapsed, 3),
        round(len(done) / elapsed, 2),
        round(float(p50), 2),
        round(float(p90), 2),
        round(float(p99), 2),
    )


def run_load(
    url: str, models: list[str], image, options: LoadOptions, protocol: str = 'http', logger=print
) -> list[LevelResult]:
    """Every model at every concurrency level; the models take turns at each level, so a change
    in the machine's other load falls on all of them alike."""
    options.check()
    backends, inputs = {}, {}
    for model in models:
        backends[model] = TritonBackend(TritonOptions(url=url, model_name=model, protocol=protocol))
        if backends[model].spec is None:
            raise ConfigError(
                f'{model} on {url} carries no model spec: serve it from a repository written by '
                'tools/deploy2triton.py'
            )
        inputs[model] = image_inputs(backends[model].spec, image)
    results = []
    for concurrency in options.concurrencies:
        for model in models:
            result = run_level(backends[model], inputs[model], concurrency, options)
            logger(
                f'{model} concurrency {concurrency}: {result.throughput:.1f} img/s, p50 '
                f'{result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms ({result.requests} requests)'
            )
            results.append(result)
    return sorted(results, key=lambda r: models.index(r.model))


def table(results: list[LevelResult]) -> str:
    """A markdown table of the results."""
    lines = [
        '| model | concurrency | img/s | p50 ms | p90 ms | p99 ms | requests |',
        '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ]
    for r in results:
        lines.append(
            f'| {r.model} | {r.concurrency} | {r.throughput:.1f} | {r.p50_ms:.1f} | '
            f'{r.p90_ms:.1f} | {r.p99_ms:.1f} | {r.requests} |'
        )
    return '\n'.join(lines)


def serve_and_load(model_file, image, options: LoadOptions, threads: int = 0, logger=print):
    """Serve ``model_file`` twice on the local server, with dynamic batching (``NAME``) and
    without (``NAME_nobatch``), and load both; the repository is a temporary folder."""
    from .repository import RepositoryOptions, write_repository
    from .server import LocalServer

    options.check()
    name = Path(model_file).name.split('.')[0]
    with tempfile.TemporaryDirectory(prefix='triton_load_') as tmp:
        repository = Path(tmp) / 'models'
        for suffix, batching in (('', True), ('_nobatch', False)):
            serving = RepositoryOptions(
                model_name=name + suffix, dynamic_batching=batching, threads=threads
            )
            write_repository(model_file, repository, serving)
        with LocalServer(repository) as server:
            return run_load(
                server.http_url, [name, name + '_nobatch'], image, options, logger=logger
            )
