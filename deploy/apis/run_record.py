"""What a test run returns and how it writes its files; shared by the detection and the
classification side of ``tools/test.py``."""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import write_atomic
from ..structures import DetectionResult


@dataclass
class TestRun:
    """Results of :func:`run_test`."""

    results: list[DetectionResult]
    img_ids: list[int]
    metrics: dict = field(default_factory=dict)
    class_names: tuple | None = None
    #: mean wall time of the backend call per image (pre/post-processing excluded), milliseconds
    latency_ms: float = 0.0
    #: wall time of the whole run: loading, inference, encoding, writing and evaluation
    wall_seconds: float = 0.0

    @property
    def pipeline_efficiency(self) -> float:
        """End-to-end throughput as a fraction of the backend's pure inference throughput."""
        if not self.wall_seconds or not self.latency_ms:
            return 0.0
        return (len(self.results) / self.wall_seconds) / (1000.0 / self.latency_ms)


def write_metrics(
    work_dir, cfg, model_file, backend: str, num_images: int, metrics: dict, logger, failures
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


def write_output(path, data, what: str, logger, failures: list) -> None:
    """Write one output file atomically; a failure is collected, not raised, so the others (and
    the printed evaluation) survive it."""
    try:
        write_atomic(path, data)
    except OSError as err:
        failures.append(f'cannot write the {what} file {path}: {err.strerror or err}')
        return
    logger(f'{what} written to {path}')
