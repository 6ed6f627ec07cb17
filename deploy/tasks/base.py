"""What a task (detection, classification, ...) supplies to the jobs: every step that differs
between tasks. The jobs in :mod:`deploy.apis` are written once against this interface and pick
the task with :func:`deploy.tasks.task_of_config` / :func:`deploy.tasks.task_of_spec`."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ..backends.base import Backend
from ..export.verify import VerifyCase
from ..spec import ModelSpec, PreprocessConfig, ResultFilter

#: how the jobs report progress: one line at a time
Logger = Callable[[str], None]
#: a file path as the jobs take it
PathLike = str | os.PathLike
#: what turns a decoded BGR image (or its file) into a network input and its meta
Pipeline = Callable[..., tuple[torch.Tensor, dict]]


@dataclass
class TestRun:
    """Results of a test run (:func:`deploy.apis.test.run_test`)."""

    results: list
    img_ids: list[int]
    metrics: dict = field(default_factory=dict)
    class_names: tuple | None = None
    #: mean wall time of the backend call per image (pre/post-processing excluded), milliseconds
    latency_ms: float = 0.0
    #: wall time of the whole run: loading, inference, encoding, writing and evaluation
    wall_seconds: float = 0.0
    #: throughput of the backend calls alone over the same images (all ranks side by side);
    #: 0: one process, ``1000 / latency_ms``
    backend_images_per_second: float = 0.0
    #: images per second of the inference loop (reading, pre-processing, backend calls,
    #: post-processing, encoding; not the model load or the evaluation)
    loop_images_per_second: float = 0.0
    #: images per second of the backend alone on pre-made inputs (``pure_inference``), else 0
    pure_images_per_second: float = 0.0

    @property
    def end_to_end_images_per_second(self) -> float:
        """Images of the run over its wall time."""
        return len(self.results) / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def backend_throughput(self) -> float:
        """Images per second of the backend calls alone, over the images of ``results``."""
        if self.backend_images_per_second:
            return self.backend_images_per_second
        return 1000.0 / self.latency_ms if self.latency_ms else 0.0

    @property
    def pipeline_efficiency(self) -> float:
        """End-to-end throughput as a fraction of the backend's pure inference throughput."""
        if not self.end_to_end_images_per_second or not self.backend_throughput:
            return 0.0
        return self.end_to_end_images_per_second / self.backend_throughput


@dataclass(frozen=True)
class TestSet:
    """A COCO test set given directly (``--ann-file``, ``--img-dir``) rather than by a config."""

    __test__ = False  # not a pytest test class

    ann_file: str
    img_dir: str


@dataclass(frozen=True)
class TestRequest:
    """What a test run asks of its task's data set and outputs (from the job's options)."""

    model_file: str
    backend: str
    metrics: tuple[str, ...] = ()
    eval_options: dict = field(default_factory=dict)
    eval_backend: str = 'pycocotools'
    class_map: str | None = None
    format_only: str | None = None
    show_dir: str | None = None
    show_score_thr: float = 0.3
    #: the data set named on the command line (``None``: the config's test set)
    test_set: TestSet | None = None


class TestData(abc.ABC):
    """A task's side of one test run: its data set, how a batch's outputs become results, and
    what is evaluated, drawn and written once the results are gathered."""

    dataset: Dataset
    #: the stages named in the end-to-end throughput line
    stages: ClassVar[str] = 'load, infer, evaluate'

    @abc.abstractmethod
    def batch_results(self, outputs: dict[str, np.ndarray], metas: list[dict]) -> list:
        """The results of one batch, in image coordinates; drawings made as they come."""

    @abc.abstractmethod
    def record(
        self, results: list, img_ids: list[int], latency_ms: float, gathered: bool
    ) -> TestRun:
        """The run record of ``results``: this rank's alone, or all of them once ``gathered``."""

    @abc.abstractmethod
    def finish(self, run: TestRun, logger: Logger) -> None:
        """Evaluate a gathered run (``run.metrics``, when metrics were requested) and draw it."""

    @abc.abstractmethod
    def results_payload(self, run: TestRun) -> bytes:
        """The ``--out`` pickle of a gathered run."""

    def coco_json(self, run: TestRun) -> str | None:
        """The ``--format-only`` file of a gathered run (``None``: the task has none)."""
        return None


class Task(abc.ABC):
    """One kind of model: how its configs are recognised, its images prepared, its exports
    verified and drawn, and its test runs made."""

    #: the task's name, as in ``ModelSpec.task`` (``detection``, ``classification``)
    name: ClassVar[str]
    #: every ``ModelSpec.task`` this task runs
    spec_tasks: ClassVar[tuple[str, ...]]

    # -- configs -----------------------------------------------------------------------------

    @abc.abstractmethod
    def handles_config(self, cfg: Any) -> bool:
        """Whether ``cfg`` describes a model of this task."""

    @abc.abstractmethod
    def pipeline(
        self, preprocess: PreprocessConfig, fixed_shape: tuple[int, int] | None
    ) -> Pipeline:
        """What turns a decoded BGR image into a network input and its meta."""

    # -- export ------------------------------------------------------------------------------

    @abc.abstractmethod
    def check_export(self, *, fp16: bool, preprocess_in_graph: bool, more_backends: bool) -> None:
        """Refuse export options the task does not support (``more_backends``: verification on
        engines besides ONNX Runtime was asked for)."""

    @abc.abstractmethod
    def verify_export(
        self,
        model: torch.nn.Module,
        onnx_file: Path,
        cases: Sequence[VerifyCase],
        raw_export: Callable[[Path], None] | None,
        precision: str,
    ) -> list:
        """Verify ``onnx_file`` on ONNX Runtime against the eager ``model`` on ``cases``;
        ``raw_export(path)`` writes the same model without post-processing, whose raw head
        tensors are compared too (``None``: the outputs alone)."""

    @abc.abstractmethod
    def verify_table(self, rows: list, backend: str) -> str:
        """The verification rows as a table."""

    @abc.abstractmethod
    def save_pictures(
        self,
        model: torch.nn.Module,
        backend: Backend,
        case: VerifyCase,
        image: np.ndarray,
        output_file: Path,
        logger: Logger,
    ) -> None:
        """``--show``: PyTorch's and ``backend``'s outputs on ``case`` drawn beside the file."""

    # -- inference and test ------------------------------------------------------------------

    @abc.abstractmethod
    def image_result(
        self, outputs: dict[str, np.ndarray], metas: list[dict], result_filter: ResultFilter | None
    ):
        """The first image's result of a batch's outputs."""

    @abc.abstractmethod
    def test_data(
        self,
        cfg: Any,
        spec: ModelSpec,
        pipeline: Pipeline,
        result_filter: ResultFilter | None,
        request: TestRequest,
        logger: Logger = print,
    ) -> TestData:
        """The task's data set and outputs for one test run (images through ``pipeline``,
        outputs filtered by ``result_filter``); refuses metrics and outputs the task lacks."""
