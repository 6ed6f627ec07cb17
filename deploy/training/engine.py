"""The epoch loop every model trains with (:func:`fit`), its log, checkpoints and seeding; the
detector job (:mod:`deploy.training.loop`) and the classifier job
(:mod:`deploy.training.classification`) each give it a model, a data set and a step.
"""

from __future__ import annotations

import os
import pprint
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_output
from ..models.checkpoint import save_checkpoint
from .optim import LrSchedule, build_optimizer
from .settings import GradClipSettings, schedule_settings

if TYPE_CHECKING:  # imported where used
    from mmengine.config import Config

#: where a run's progress lines go (None: only ``train.log``)
TrainLogger = Callable[[str], None] | None


def config_text(cfg: Config | Mapping) -> str:
    """The resolved config as text for checkpoint metadata (MMDetection stores
    ``meta['config']``); a ``pprint`` of the dict (``pretty_text`` would take seconds)."""
    data = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    return pprint.pformat(data, width=100, sort_dicts=False)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def optimizer_step(
    model: torch.nn.Module,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    grad_clip: GradClipSettings | None = None,
) -> None:
    """Back-propagate ``loss``, clip the gradients as the config says, update the weights."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        params = [p for p in model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(
            params, max_norm=grad_clip.max_norm, norm_type=grad_clip.norm_type
        )
    optimizer.step()


def save_training_checkpoint(
    model: torch.nn.Module,
    path: str | os.PathLike,
    meta: dict,
    optimizer: torch.optim.Optimizer | None = None,
) -> str:
    """MMDetection's layout, written atomically by :func:`save_checkpoint`, plus the optimiser
    state under ``'optimizer'`` for ``--resume``."""
    path = save_checkpoint(model, path, meta=meta)
    if optimizer is None:
        return path
    # save_checkpoint writes meta + state_dict only; add the optimizer the same atomic way.
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    checkpoint['optimizer'] = optimizer.state_dict()
    with atomic_output(path) as f:
        torch.save(checkpoint, f)
    return path


def _atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    with atomic_output(dst) as out, open(src, 'rb') as f:
        shutil.copyfileobj(f, out)


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by :func:`save_training_checkpoint` (weights-only unpickling)."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise CheckpointError(f'cannot resume from {path}: {e}') from e
    for key in ('state_dict', 'meta', 'optimizer'):
        if key not in checkpoint:
            raise CheckpointError(
                f'cannot resume from {path}: it has no {key!r} '
                '(not a checkpoint written by tools/train.py)'
            )
    return checkpoint


@dataclass(frozen=True)
class TrainOptions:
    """What a training run is asked to do (``tools/train.py``'s flags); the checks that need no
    file run when it is made.

    Attributes:
        work_dir: where ``epoch_{n}.pth``, ``latest.pth`` and ``train.log`` go.
        epochs: stop after this many epochs (None: the config's; the LR schedule keeps its own).
        resume: a checkpoint of this run: restores weights, optimiser and epoch.
        seed: seeds initial weights, batch order, flips and sampling.
        num_workers: data-loading processes (None: the config's).
        progress: show a progress bar.
        threads: torch intra-op threads, set by the tool (None: torch's default).
        out: also write the final weights (no optimiser state) here; written by the tool.
    """

    work_dir: Path
    epochs: int | None = None
    resume: str | None = None
    seed: int = 0
    num_workers: int | None = None
    progress: bool = True
    threads: int | None = None
    out: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, 'work_dir', Path(self.work_dir))
        for flag, value, least in (
            ('--epochs', self.epochs, 1),
            ('--workers', self.num_workers, 0),
            ('--threads', self.threads, 1),
        ):
            if value is not None and value < least:
                raise ConfigError(f'{flag} must be at least {least}, got {value}')


@dataclass
class TrainResult:
    """What :func:`train` did."""

    model: torch.nn.Module
    class_names: tuple
    epoch_losses: list[dict] = field(default_factory=list)
    checkpoint: str | None = None
    seconds: float = 0.0


class TrainLog:
    """``train.log`` in the work directory (appended to, so a resumed run continues it), each
    line also given to ``logger``."""

    def __init__(self, work_dir: Path, logger: TrainLogger = print):
        work_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(work_dir / 'train.log', 'a', encoding='utf-8')  # noqa: SIM115
        self._logger = logger

    def __call__(self, message: str) -> None:
        self._file.write(message + '\n')
        self._file.flush()
        if self._logger is not None:
            self._logger(message)

    def close(self) -> None:
        self._file.close()


#: one training step on a batch: ``(batch, optimizer, grad_clip) -> {name: value}``; the values
#: are added up over the epoch, and ``loss`` (the batch's own) is shown on the progress bar
StepFn = Callable[[object, torch.optim.Optimizer, 'GradClipSettings | None'], dict]


def _mean_per_batch(sums: dict[str, float], batches: int) -> dict[str, float]:
    return {k: v / max(batches, 1) for k, v in sums.items()}


def _describe_losses(means: dict[str, float]) -> str:
    return ' '.join(f'{k} {v:.4f}' for k, v in means.items())


def fit(
    model: torch.nn.Module,
    cfg: Config,
    dataset: torch.utils.data.Dataset,
    loader: torch.utils.data.DataLoader,
    class_names: Sequence[str],
    step: StepFn,
    *,
    work_dir: Path,
    log: TrainLog,
    seed: int,
    epochs: int | None = None,
    resume: str | None = None,
    progress: bool = True,
    epoch_means: Callable[[dict, int], dict] = _mean_per_batch,
    describe: Callable[[dict], str] = _describe_losses,
    start_time: float | None = None,
) -> TrainResult:
    """The epochs every model trains with: the config's optimiser, LR schedule and gradient
    clipping, ``--resume``, per-epoch reseeding (so a resumed run continues exactly), a progress
    bar, one log line and one checkpoint (``epoch_{n}.pth`` and ``latest.pth``) per epoch.

    ``dataset`` and ``loader.batch_sampler`` have ``set_epoch``. ``epoch_means(sums, batches)``
    turns the step values added up over an epoch into the logged means (default: per batch),
    which ``describe`` formats (default: ``name value`` pairs). Closes ``log``.
    """
    start_time = time.perf_counter() if start_time is None else start_time
    settings = schedule_settings(cfg)
    optimizer = build_optimizer(model, settings.optimizer)
    total_epochs = epochs or settings.epochs
    schedule = LrSchedule(settings.lr, settings.base_lr, settings.epochs, len(loader))
    grad_clip = settings.grad_clip

    start_epoch = 0
    if resume:
        checkpoint = load_training_checkpoint(resume)
        model.load_state_dict(checkpoint['state_dict'])
        optimizer.load_state_dict(checkpoint['optimizer'])
        start_epoch = int(checkpoint['meta'].get('epoch', 0))
        log(f'resumed from {resume} at epoch {start_epoch}')
    log(
        f'training {type(model).__name__} on {len(dataset)} images of {len(class_names)} '
        f'classes, batch {loader.batch_sampler.batch_size}, epochs '
        f'{start_epoch + 1}..{total_epochs}, seed {seed}'
    )
    result = TrainResult(model, tuple(class_names))
    meta_base = dict(CLASSES=tuple(class_names), seed=seed, config=config_text(cfg))
    lr = schedule(start_epoch, start_epoch * len(loader))
    for epoch in range(start_epoch, total_epochs):
        model.train()
        dataset.set_epoch(epoch)
        loader.batch_sampler.set_epoch(epoch)
        torch.manual_seed(seed * 1000 + epoch)
        sums: dict[str, float] = {}
        bar = tqdm(
            loader,
            desc=f'epoch {epoch + 1}/{total_epochs}',
            disable=not progress,
            dynamic_ncols=True,
            leave=False,
        )
        for i, batch in enumerate(bar):
            lr = schedule(epoch, epoch * len(loader) + i)
            for group in optimizer.param_groups:
                group['lr'] = lr
            values = step(batch, optimizer, grad_clip)
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f'{values["loss"]:.4f}', lr=f'{lr:.2e}')
        means = epoch_means(sums, len(loader))
        result.epoch_losses.append(means)
        log(
            f'epoch {epoch + 1}/{total_epochs} lr {lr:.2e} {describe(means)} '
            f'({time.perf_counter() - start_time:.0f} s)'
        )
        meta = dict(meta_base, epoch=epoch + 1, iter=(epoch + 1) * len(loader))
        path = save_training_checkpoint(model, work_dir / f'epoch_{epoch + 1}.pth', meta, optimizer)
        _atomic_copy(path, work_dir / 'latest.pth')
        result.checkpoint = str(path)
    result.seconds = time.perf_counter() - start_time
    log.close()
    return result
