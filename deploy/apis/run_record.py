"""How a test run writes its files: each atomically, a failure collected rather than raised."""

import json
import time
from pathlib import Path

from mmengine.config import Config

from ..fileio import write_atomic
from ..tasks.base import Logger, PathLike


def write_metrics(
    work_dir: PathLike,
    cfg: Config,
    model_file: PathLike,
    backend: str,
    num_images: int,
    metrics: dict,
    logger: Logger,
    failures: list[str],
) -> None:
    """``work_dir/eval_<time>.json``: the metrics with what produced them (MMDetection's
    ``--work-dir`` record)."""
    path = Path(work_dir) / f'eval_{time.strftime("%Y%m%d_%H%M%S")}.json'
    record = dict(
        config=getattr(cfg, 'filename', None),
        model=str(model_file),
        backend=backend,
        num_images=num_images,
        metrics=metrics,
    )
    write_output(path, json.dumps(record, indent=2), 'metrics', logger, failures)


def write_output(
    path: PathLike, data: str | bytes, what: str, logger: Logger, failures: list[str]
) -> None:
    """Write one output file atomically; a failure is collected, not raised, so the others (and
    the printed evaluation) survive it."""
    try:
        write_atomic(path, data)
    except OSError as err:
        failures.append(f'cannot write the {what} file {path}: {err.strerror or err}')
        return
    logger(f'{what} written to {path}')
