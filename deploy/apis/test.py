"""The evaluation job behind ``tools/test.py``: a data set through a backend, then the task's
metrics (COCO for detectors, top-k accuracy for classifiers: :mod:`deploy.tasks`)."""

import collections
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Subset
from tqdm import tqdm

from ..backends import build_backend
from ..backends.base import Backend
from ..config import load_config
from ..datasets.coco import build_dataloader
from ..datasets.pipeline import network_inputs
from ..datasets.static_fit import fitted_differently, static_note
from ..errors import ConfigError, DeployError
from ..finite import check_outputs_finite
from ..tasks import TestData, TestRequest, TestRun, TestSet, task_of_spec
from ..tasks.base import Logger
from .contract import RunPlan, plan_run
from .distributed import gather_backend_time, gather_results, init_distributed, shard_indices
from .run_record import write_metrics, write_output

__all__ = ['TestOptions', 'TestRun', 'TestSet', 'run_test', 'evaluate_model']


@dataclass(frozen=True)
class TestOptions:
    """Everything a test run is asked to do (``tools/test.py``'s flags).

    Args:
        num_images: only the first this many images of the test set (by id).
        metrics: any of ``bbox``, ``segm`` (mask models: masks are pasted with the config's
            ``mask_thr_binary`` and stream as COCO RLE), ``proposal``; ``accuracy`` for
            classifiers.
        class_map: how model labels become data-set categories
            (:func:`deploy.evaluation.class_map.resolve_class_map`; default: names must match).
        strict: checkpoint keys must match the model (``pytorch`` backend).
        out: pickle file for the raw results; ``format_only``: COCO json file to write;
            ``work_dir``: folder for ``eval_<time>.json`` with the metrics. Metrics are computed
            and logged before any file is written, and written even if ``out`` cannot be.
        show_dir: draw detections above ``show_score_thr`` into this folder.
        precision: inference precision of backends that choose it at load time (``openvino``:
            ``fp32``, ``bf16``, ``int8``); ``None``: the file's.
        triton: :class:`~deploy.backends.triton.TritonOptions` of a served model (backend
            ``triton``): each image is one request, ``concurrency`` images are read at a time.
        test_set: the annotation file and image folder, instead of the config's test set; with
            ``config=None`` the model file alone says how to run it (no config code is run).
        launcher: ``'pytorch'`` under ``torchrun``: each rank runs its shard of the data set on
            its own backend session (GPU ``LOCAL_RANK`` for ``cuda``), rank 0 gathers the results
            and alone writes and evaluates; the other ranks return their shard, without metrics.
        pure_inference: after the run, time the backend alone on the same images made in memory
            beforehand (:func:`pure_inference_throughput`) and report the loop's share of it.
    """

    backend: str = 'onnxruntime'
    cfg_options: dict | None = None
    device: str = 'cpu'
    batch_size: int = 1
    num_workers: int = 2
    num_threads: int | None = None
    num_images: int | None = None
    metrics: tuple[str, ...] = ()
    eval_options: dict = field(default_factory=dict)
    eval_backend: str = 'pycocotools'
    class_map: str | None = None
    strict: bool = True
    out: str | None = None
    format_only: str | None = None
    work_dir: str | None = None
    show_dir: str | None = None
    show_score_thr: float = 0.3
    launcher: str = 'none'
    precision: str | None = None
    triton: Any = None  # deploy.backends.triton.TritonOptions (imported only when served)
    test_set: TestSet | None = None
    progress: bool = True
    pure_inference: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, 'metrics', tuple(self.metrics or ()))
        object.__setattr__(self, 'eval_options', dict(self.eval_options or {}))

    def request(self, model_file: str | os.PathLike) -> TestRequest:
        """What the task's data set and outputs are asked for."""
        fields = set(TestRequest.__dataclass_fields__) - {'model_file'}
        values = {k: getattr(self, k) for k in fields}  # shallow: asdict would copy TestSet
        return TestRequest(model_file=str(model_file), **values)


def run_test(
    config: Any,
    model_file: str | os.PathLike,
    backend: str = 'onnxruntime',
    *,
    logger: Logger = print,
    **options: Any,
) -> TestRun:
    """Run a model on the config's test set and evaluate it: :func:`evaluate_model` with
    ``TestOptions(backend=backend, **options)``."""
    return evaluate_model(config, model_file, TestOptions(backend=backend, **options), logger)


def evaluate_model(
    config: Any, model_file: str | os.PathLike, options: TestOptions, logger: Logger = print
) -> TestRun:
    """Run ``model_file`` (checkpoint for ``pytorch``, ``.onnx``, engine, ...) on the test set of
    ``config`` (a path or a loaded config) as ``options`` say, and evaluate it."""
    cfg = load_config(config, options.cfg_options) if isinstance(config, (str, Path)) else config
    if cfg is None and options.backend == 'pytorch':
        raise ConfigError('the pytorch backend needs the config to build the model')
    rank, world_size = init_distributed(options.launcher, device=options.device)
    if rank != 0:
        options, logger = _quiet(options), _silent
    # The model first: a bad model file is reported before any data is touched.
    runner = _build_runner(cfg, model_file, options, rank, world_size)
    plan = plan_run(runner, cfg, model_file, logger)
    batch_size = _batch_size(plan, options, logger)
    task = task_of_spec(plan.spec)
    request = options.request(model_file)
    data = task.test_data(cfg, plan.spec, plan.pipeline(), plan.result_filter, request, logger)
    run_start = time.perf_counter()
    shard = _shard(data, options, batch_size, rank, world_size)
    source = f'{model_file} ({options.backend})'
    loop_start = time.perf_counter()
    results, img_ids, seconds = _infer(runner, plan, shard, data, options, source, logger)
    loop_seconds = time.perf_counter() - loop_start
    # Both throughputs count every rank's images: the backend's over the slowest rank's time.
    backend_time = gather_backend_time(len(results), seconds)
    gathered = gather_results(results, img_ids)
    if gathered is None:  # not rank 0: rank 0 writes and evaluates
        return data.record(results, img_ids, backend_time.latency_ms, gathered=False)
    run = data.record(*gathered, backend_time.latency_ms, gathered=True)
    run.backend_images_per_second = backend_time.images_per_second
    data.finish(run, logger)
    failures = _write_outputs(run, data, cfg, model_file, options, logger)
    run.wall_seconds = time.perf_counter() - run_start
    if run.results:
        logger(throughput_line(run, data.stages, world_size, run_label(runner, plan, options)))
        run.loop_images_per_second = len(run.results) / loop_seconds
        if options.pure_inference and world_size == 1:
            loader = _shard(data, options, batch_size, 0, 1, num_workers=0)[0]
            run.pure_images_per_second = pure_inference_throughput(runner, loader)
        logger(loop_line(run, options.num_threads))
    if failures:
        raise DeployError('; '.join(failures))
    return run


def run_label(runner: Backend, plan: RunPlan, options: TestOptions) -> str:
    """The backend and the precision it computes in (``openvino bf16``), as the run's output
    names it: a BF16 or INT8 run must not read as an FP32 one."""
    precision = getattr(runner, 'precision', None) or plan.spec.precision
    return f'{options.backend} {precision}' if precision else options.backend


def throughput_line(run: TestRun, stages: str, world_size: int = 1, label: str = '') -> str:
    """The run's end-to-end and backend-alone throughput, both over the same gathered images."""
    where = ', '.join(part for part in (label, f'{world_size} ranks' * (world_size > 1)) if part)
    return (
        f'{len(run.results)} images{f" ({where})" if where else ""}: '
        f'{run.end_to_end_images_per_second:.1f} img/s end to '
        f'end ({stages}), {run.backend_throughput:.1f} img/s backend inference alone '
        f'({run.pipeline_efficiency:.0%})'
    )


def loop_line(run: TestRun, threads: int | None) -> str:
    """The inference loop's throughput (reading, pre-processing, backend calls, post-processing
    and encoding of every image; not the model load or the evaluation), and where measured the
    backend's own on pre-made inputs, at the same thread count."""
    loop, pure = run.loop_images_per_second, run.pure_images_per_second
    line = f'inference loop: {loop:.1f} img/s (load, infer, encode)'
    if pure:
        where = f'{threads} threads' if threads else 'default threads'
        line += f'; pure backend inference on pre-made inputs: {pure:.1f} img/s ({where}): '
        line += f'the loop reaches {loop / pure:.0%} of it'
    return line


def pure_inference_throughput(runner, loader, chunk: int = 16) -> float:
    """Images per second of ``runner``'s calls alone on the inputs of ``loader`` (no workers),
    made ``chunk`` batches at a time before any of them is timed: memory stays bounded and
    nothing else runs while the backend does. The first call is a warm-up, not timed."""
    batches = iter(loader)
    seconds, images, warm = 0.0, 0, False
    while made := [network_inputs(img, metas) for img, metas in itertools.islice(batches, chunk)]:
        if not warm:
            runner(made[0])
            warm = True
        for inputs in made:
            start = time.perf_counter()
            runner(inputs)
            seconds += time.perf_counter() - start
            images += len(next(iter(inputs.values())))
    return images / seconds if seconds else 0.0


def _build_runner(cfg, model_file, options: TestOptions, rank: int, world_size: int):
    device = options.device
    if world_size > 1 and device in ('cuda', 'gpu'):
        device = f'cuda:{os.environ.get("LOCAL_RANK", rank)}'
    extra = {} if options.precision is None else dict(precision=options.precision)
    if options.triton is not None:
        extra['triton'] = options.triton
    return build_backend(
        options.backend,
        model_file,
        cfg=cfg,
        device=device,
        num_threads=options.num_threads,
        strict=options.strict,
        **extra,
    )


def _batch_size(plan: RunPlan, options: TestOptions, logger: Logger) -> int:
    if options.triton is not None:  # one image per request, the server batches them
        return options.triton.concurrency
    wanted = options.batch_size
    if plan.max_batch is not None and wanted > plan.max_batch:
        reason = 'takes decoded images' if plan.decoded_images else 'has a static input shape'
        logger(f'note: the model {reason}: batch size forced to 1')
        return 1
    if wanted > 1 and plan.fixed_shape is None:
        logger(
            f'note: --batch-size {wanted} pads each image to the largest of its batch '
            "(MMDetection's semantics): detections, and the AP, can differ slightly from "
            '--batch-size 1'
        )
    return wanted


def _shard(
    data: TestData,
    options: TestOptions,
    batch_size: int,
    rank: int,
    world_size: int,
    num_workers: int | None = None,
):
    """This rank's share of the test set, batched: ``(loader, number of images)``; the
    loader has ``num_workers`` (default: the options') loading processes."""
    dataset = data.dataset
    indices = list(range(len(dataset)))[: options.num_images]
    if world_size > 1:
        indices = [indices[i] for i in shard_indices(len(indices), rank, world_size)]
    shard = dataset if len(indices) == len(dataset) else Subset(dataset, indices)
    workers = options.num_workers if num_workers is None else num_workers
    loader = build_dataloader(shard, batch_size=batch_size, num_workers=workers)
    return loader, len(indices)


def _infer(
    runner,
    plan: RunPlan,
    shard: tuple,
    data: TestData,
    options: TestOptions,
    source: str,
    logger: Logger,
) -> tuple[list, list[int], float]:
    """The shard through ``runner``: results, image ids and the seconds spent in the backend
    calls. Non-finite outputs stop the run; a static file says how many images it ran
    at another size than PyTorch does."""
    loader, total = shard
    results: list = []
    img_ids: list[int] = []
    infer_seconds, refitted = 0.0, 0
    label = run_label(runner, plan, options)
    # Post-processing (mask pasting, encoding) runs on a thread while the backend runs the next
    # batch; results are taken in order, at most two batches behind, so memory stays flat.
    with ThreadPoolExecutor(max_workers=1) as post:
        pending: collections.deque = collections.deque()
        for img, metas in _progress(loader, label, total, options.progress):
            inputs = network_inputs(img, metas)
            if plan.fixed_shape is not None:
                refitted += fitted_differently(metas, plan.preprocess)
            start = time.perf_counter()
            outputs = runner(inputs)
            infer_seconds += time.perf_counter() - start
            check_outputs_finite(outputs, source)
            pending.append(post.submit(data.batch_results, outputs, metas))
            img_ids.extend(int(m['img_id']) for m in metas)
            while len(pending) > 2:
                results.extend(pending.popleft().result())
        while pending:
            results.extend(pending.popleft().result())
    if plan.fixed_shape is not None and not plan.decoded_images:
        logger(static_note(refitted, len(results), plan.fixed_shape))
    return results, img_ids, infer_seconds


def _write_outputs(
    run: TestRun, data: TestData, cfg, model_file, options: TestOptions, logger: Logger
) -> list[str]:
    """The output files, after the evaluation: a full disk or a bad path must not cost the
    evaluation just printed; every file that can be is written, the failures are returned."""
    failures: list[str] = []
    if options.work_dir and run.metrics:
        write_metrics(
            options.work_dir,
            cfg,
            model_file,
            options.backend,
            len(run.results),
            run.metrics,
            logger,
            failures,
        )
    if options.out:
        write_output(options.out, data.results_payload(run), 'results', logger, failures)
    if options.format_only:
        write_output(options.format_only, data.coco_json(run), 'COCO json', logger, failures)
    return failures


def _progress(loader, backend: str, total: int, enabled: bool):
    """A progress bar in images (whole numbers, whatever the batch size)."""
    bar = tqdm(total=total, desc=backend, unit='img', disable=not enabled, dynamic_ncols=True)
    with bar:
        for img, metas in loader:
            yield img, metas
            bar.update(len(metas))


def _quiet(options: TestOptions) -> TestOptions:
    """The options of ranks other than 0: no progress bar."""
    from dataclasses import replace

    return replace(options, progress=False)


def _silent(*_args, **_kwargs) -> None:
    """The logger of ranks other than 0."""
