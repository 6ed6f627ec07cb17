"""Distributed evaluation: each rank runs a shard of the data set, rank 0 gathers and evaluates.

The mmengine / torchvision reference-script pattern, launched with ``torchrun``
(``tools/dist_test.sh``)::

    rank, world_size = init_distributed(args.launcher, device=args.device)
    indices = shard_indices(len(dataset), rank, world_size)
    ...                                   # run the backend on dataset[i] for i in indices
    gathered = gather_results(results, img_ids)
    if gathered is not None:              # rank 0 only
        results, img_ids = gathered       # every image once, sorted by id
        ...                               # COCO metrics

Sharding is interleaved (rank r takes items r, r + W, r + 2W, ...), so every item is evaluated
exactly once and the shards differ in size by at most one. Gathering also removes duplicate image
ids, so samplers that pad the last round (``torch.utils.data.DistributedSampler``) are safe too.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError

LAUNCHERS = ('none', 'pytorch')
_TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def init_distributed(launcher: str, device: str | None = None) -> tuple[int, int]:
    """Join the process group described by the launcher and return ``(rank, world_size)``.

    Args:
        launcher: ``'none'`` (one process: ``(0, 1)``) or ``'pytorch'`` (``torchrun``: ``RANK``,
            ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` from the environment).
        device: the device the backend will run on. ``cuda``/``cuda:N`` selects NCCL and binds the
            process to GPU ``LOCAL_RANK``; ``cpu`` selects gloo; ``None`` picks NCCL when CUDA is
            available, else gloo.

    Calling it again in an initialised process returns the existing group's rank and size.
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f'unknown launcher {launcher!r}; choose one of {", ".join(LAUNCHERS)}')
    if launcher == 'none':
        return 0, 1
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    missing = [var for var in _TORCHRUN_VARS if var not in os.environ]
    if missing:
        raise ConfigError(
            f'--launcher pytorch needs the torchrun environment ({", ".join(missing)} not set): '
            'start with tools/dist_test.sh or torchrun --nproc_per_node=N tools/test.py ...'
        )
    use_cuda = device.startswith('cuda') if device else torch.cuda.is_available()
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f'device {device} asked for, but CUDA is not available')
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    dist.init_process_group(backend='nccl' if use_cuda else 'gloo', init_method='env://')
    return dist.get_rank(), dist.get_world_size()


def shard_indices(num_items: int, rank: int, world_size: int) -> list[int]:
    """The items of ``rank``: ``rank, rank + world_size, ...`` (interleaved, no padding).

    Over all ranks every index in ``range(num_items)`` appears exactly once.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} is outside a world of size {world_size}')
    if num_items < 0:
        raise ValueError(f'num_items must be >= 0, got {num_items}')
    return list(range(rank, num_items, world_size))


def gather_results(results: list, img_ids: list[int]) -> tuple[list, list] | None:
    """Collect every rank's ``(results, img_ids)`` on rank 0.

    Uses ``all_gather_object`` (works on gloo and NCCL alike; every rank briefly holds all the
    results, which are small per-image detections). Duplicates, e.g. the padding of a
    ``DistributedSampler``, keep their first occurrence.

    Returns:
        On rank 0 (or without a process group): ``(results, img_ids)`` with each image id once,
        sorted by id. On other ranks: None.
    """
    if len(results) != len(img_ids):
        raise ValueError(f'{len(results)} results but {len(img_ids)} image ids')
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        shards: list = [None] * dist.get_world_size()
        dist.all_gather_object(shards, (list(results), [int(i) for i in img_ids]))
        if dist.get_rank() != 0:
            return None
    else:
        shards = [(list(results), [int(i) for i in img_ids])]
    merged: dict[int, object] = {}
    for shard_results, shard_ids in shards:
        for result, img_id in zip(shard_results, shard_ids):
            merged.setdefault(img_id, result)
    order = sorted(merged)
    return [merged[i] for i in order], order


@dataclass(frozen=True)
class BackendTime:
    """Backend time of a run over every rank: the images they ran and the seconds spent in the
    backend calls (summed, and of the slowest rank, which bounds the parallel ranks' wall time)."""

    images: int
    seconds: float
    slowest_seconds: float

    @property
    def latency_ms(self) -> float:
        """Mean backend time per image, milliseconds."""
        return 1000.0 * self.seconds / max(self.images, 1)

    @property
    def images_per_second(self) -> float:
        """Throughput of the backends alone over the same images: the ranks run side by side."""
        return self.images / self.slowest_seconds if self.slowest_seconds > 0 else 0.0


def gather_backend_time(images: int, seconds: float) -> BackendTime:
    """Every rank's image count and backend seconds, summed (a collective: all ranks call it)."""
    shards = [(int(images), float(seconds))]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        shards = [None] * dist.get_world_size()
        dist.all_gather_object(shards, (int(images), float(seconds)))
    return BackendTime(
        images=sum(n for n, _ in shards),
        seconds=sum(s for _, s in shards),
        slowest_seconds=max(s for _, s in shards),
    )


def is_main_process() -> bool:
    """True on rank 0 and in single-process runs: the rank that logs, evaluates and writes."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def cleanup_distributed() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
