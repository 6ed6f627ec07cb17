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
from typing import TYPE_CHECKING, Any

import torch

from ..config import get_class_names, get_model_cfg, get_test_settings
from ..config.classification import is_classifier_cfg
from ..models import build_detector
from .classification import train_classifier
from .data import CocoTrainDataset, build_train_loader, get_train_transform_cfg, train_data_settings
from .engine import (
    TrainLog,
    TrainLogger,
    TrainOptions,
    TrainResult,
    fit,
    optimizer_step,
    seed_everything,
)
from .head_losses import detector_loss
from .init import init_weights, load_pretrained
from .settings import GradClipSettings, pretrained_inits

if TYPE_CHECKING:  # imported where used
    from mmengine.config import Config


def build_train_model(cfg: Config, logger: TrainLogger = print) -> torch.nn.Module:
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
    cfg: Config, work_dir: str | os.PathLike, *, logger: TrainLogger = print, **options: Any
) -> TrainResult:
    """Train the config's model on its training set: :func:`run_training` with
    ``TrainOptions(work_dir, **options)`` (``epochs``, ``resume``, ``seed``, ``num_workers``,
    ``progress``; see :class:`~deploy.training.engine.TrainOptions`)."""
    return run_training(cfg, TrainOptions(work_dir, **options), logger=logger)


def run_training(cfg: Config, options: TrainOptions, logger: TrainLogger = print) -> TrainResult:
    """Train the config's detector on its training set.

    Args:
        cfg: a loaded config (``model`` with ``train_cfg``, ``data.train`` or
            ``train_dataloader``, ``optimizer``, ``optimizer_config``, ``lr_config``, ``runner``).
        options: the run's work folder, epochs, resume checkpoint, seed, workers, progress bar.

    Returns:
        :class:`TrainResult` with the trained model (train mode) and per-epoch mean losses.

    Image classifiers (``ImageClassifier`` configs) are trained by
    :func:`deploy.training.classification.train_classifier`.
    """
    if is_classifier_cfg(cfg):
        return train_classifier(cfg, options, logger=logger)
    start_time = time.perf_counter()
    log = TrainLog(options.work_dir, logger)
    seed = options.seed
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
    workers = data.num_workers if options.num_workers is None else options.num_workers
    loader = build_train_loader(dataset, data.batch_size, workers, seed)
    return fit(
        model,
        cfg,
        dataset,
        loader,
        class_names,
        lambda batch, optimizer, grad_clip: train_step(model, batch, optimizer, grad_clip),
        work_dir=options.work_dir,
        log=log,
        seed=seed,
        epochs=options.epochs,
        resume=options.resume,
        progress=options.progress,
        start_time=start_time,
    )
