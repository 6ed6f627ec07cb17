"""The training loop behind ``tools/train.py``: config -> model (initialised from scratch) ->
epochs of SGD/AdamW over the COCO-format training set -> MMDetection-format checkpoints.

Determinism: with one ``seed``, the initial weights, the batch order (drawn from ``seed`` and the
epoch), the flips (drawn from ``seed``, epoch and image index) and
samplers' draws (the global RNG, reseeded every epoch) are fixed, so a run resumed from the
checkpoint of epoch ``e`` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..config import get_class_names, get_model_cfg, get_test_settings
from ..config.classification import is_classifier_cfg
from ..models import build_detector
from .classification import train_classifier
from .data import CocoTrainDataset, build_train_loader, get_train_transform_cfg, train_data_settings
from .engine import (
    TrainLog,
    TrainResult,
    fit,
    optimizer_step,
    seed_everything,
)
from .head_losses import detector_loss
from .init import init_weights, load_pretrained
from .settings import GradClipSettings, pretrained_inits


def build_train_model(cfg, logger=print) -> torch.nn.Module:
    """The config's detector with MMDetection's from-scratch initialisation, then the
    ``Pretrained`` ``init_cfg`` of its backbone / neck applied, in train mode."""
    model_cfg = get_model_cfg(cfg)
    model = build_detector(
        model_cfg, get_test_settings(cfg), config_file=getattr(cfg, 'filename', None)
    )
    init_weights(model)
    load_pretrained(model, pretrained_inits(model_cfg), logger=logger)
    return model.train()


def train_step(
    model: torch.nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    grad_clip: GradClipSettings | None = None,
) -> dict[str, float]:
    """One SGD step; returns each loss and their sum (``loss``) as floats."""
    losses = detector_loss(model, batch)
    total = sum(losses.values())
    optimizer_step(model, total, optimizer, grad_clip)
    out = {k: float(v.detach()) for k, v in losses.items()}
    out['loss'] = float(total.detach())
    return out


def train(
    cfg,
    work_dir: str | os.PathLike,
    *,
    epochs: int | None = None,
    resume: str | None = None,
    seed: int = 0,
    num_workers: int | None = None,
    progress: bool = True,
    logger=print,
) -> TrainResult:
    """Train the config's detector on its training set.

    Args:
        cfg: a loaded config (``model`` with ``train_cfg``, ``data.train`` or
            ``train_dataloader``, ``optimizer``, ``optimizer_config``, ``lr_config``, ``runner``).
        work_dir: where ``epoch_{n}.pth``, ``latest.pth`` and ``train.log`` go.
        epochs: overrides ``runner.max_epochs`` (the LR schedule keeps its epochs).
        resume: a checkpoint of this run: restores weights, optimiser and epoch.
        seed: seeds initial weights, batch order, flips and sampling.
        num_workers: data-loading processes (default: the config's).

    Returns:
        :class:`TrainResult` with the trained model (train mode) and per-epoch mean losses.

    Image classifiers (``ImageClassifier`` configs) are trained by
    :func:`deploy.training.classification.train_classifier`.
    """
    if is_classifier_cfg(cfg):
        return train_classifier(
            cfg,
            work_dir,
            epochs=epochs,
            resume=resume,
            seed=seed,
            num_workers=num_workers,
            progress=progress,
            logger=logger,
        )
    start_time = time.perf_counter()
    work_dir = Path(work_dir)
    log = TrainLog(work_dir, logger)
    seed_everything(seed)
    model = build_train_model(cfg, logger=log)
    data = train_data_settings(cfg)
    with_mask = getattr(getattr(model, 'roi_head', None), 'mask_head', None) is not None
    dataset = CocoTrainDataset(
        data.ann_file,
        data.img_prefix,
        get_train_transform_cfg(cfg),
        with_mask=with_mask,
        classes=data.classes or get_class_names(cfg),
        seed=seed,
    )
    class_names = dataset.class_names
    model.class_names = tuple(class_names)
    workers = data.num_workers if num_workers is None else num_workers
    loader = build_train_loader(dataset, data.batch_size, workers, seed)
    return fit(
        model,
        cfg,
        dataset,
        loader,
        class_names,
        lambda batch, optimizer, grad_clip: train_step(model, batch, optimizer, grad_clip),
        work_dir=work_dir,
        log=log,
        seed=seed,
        epochs=epochs,
        resume=resume,
        progress=progress,
        start_time=start_time,
    )
