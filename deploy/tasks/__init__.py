"""The tasks a model can have, and the one dispatch from a config or a model spec to its task.

A new task is a new module here with a :class:`~deploy.tasks.base.Task` subclass, listed in
:data:`TASKS`; the jobs in :mod:`deploy.apis` do not change.
"""

from typing import Any

from ..errors import ConfigError
from ..spec import ModelSpec
from .base import Task, TestData, TestRequest, TestRun, TestSet
from .classification import ClassificationTask
from .detection import DetectionTask

#: every task, most specific first: the first that handles a config is its task
TASKS: tuple[Task, ...] = (ClassificationTask(), DetectionTask())


def task_of_config(cfg: Any) -> Task:
    """The task of the model a config describes."""
    for task in TASKS:
        if task.handles_config(cfg):
            return task
    raise ConfigError(f'no task handles the model of {getattr(cfg, "filename", "<config>")}')


def task_of_spec(spec: ModelSpec) -> Task:
    """The task of a model described by its spec (an exported file's, or a built model's)."""
    for task in TASKS:
        if spec.task in task.spec_tasks:
            return task
    raise ConfigError(f'unknown task {spec.task!r} of a {spec.model_type}')


__all__ = [
    'TASKS',
    'Task',
    'TestData',
    'TestRequest',
    'TestRun',
    'TestSet',
    'task_of_config',
    'task_of_spec',
]
