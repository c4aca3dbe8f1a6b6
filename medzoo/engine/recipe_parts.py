"""A recipe's training parts from its settings: the data, the model shaped by it, loaders, optimiser, schedule
and loss. Shared by `medzoo train` and `medzoo bench`, so that a benchmark runs exactly what training runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from hydra.utils import instantiate
from sklearn.utils.class_weight import compute_class_weight

from medzoo.datasets.dataset import DataSplits
from medzoo.engine.distributed import SINGLE_PROCESS, DistInfo, main_first
from medzoo.engine.loaders import Loaders, build_loaders
from medzoo.engine.optim import build_optimizer, build_scheduler, freeze
from medzoo.engine.recipe_settings import RecipeSettings
from medzoo.errors import ConfigError
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo import create_model

log = logging.getLogger(__name__)


def class_weights(setting, labels: np.ndarray, num_classes: int) -> torch.Tensor | None:
    """`balanced` weights classes by inverse frequency; a list is used as given."""
    if setting is None:
        return None
    if setting == "balanced":
        weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels)
    else:
        weights = np.asarray(list(setting), dtype=np.float64)
        if len(weights) != num_classes:
            raise ConfigError(f"trainer.class_weights has {len(weights)} values for {num_classes} classes.")
    return torch.tensor(weights, dtype=torch.float32)


def build_model(settings: RecipeSettings, splits: DataSplits, device: torch.device,
                channels_last: bool) -> torch.nn.Module:
    """The recipe's model, shaped by the data (channels, classes, input size), on `device`."""
    model = create_model(settings.model.name, in_chans=splits.in_chans, num_classes=len(splits.classes),
                         spatial_dims=splits.spatial_dims, pretrained=settings.model.pretrained,
                         **settings.model.options(min(splits.input_size)))
    if settings.trainer.freeze:
        frozen = list(settings.trainer.freeze)
        log.info("frozen: %d parameters in %s", freeze(model, frozen), frozen)
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)


def scaled_lr(settings: RecipeSettings, dist: DistInfo) -> float:
    """optim.lr, times the world size under trainer.lr_scaling=linear (the global batch grows with it)."""
    trainer, batch = settings.trainer, settings.loader.batch_size
    factor = dist.world_size if trainer.lr_scaling == "linear" else 1
    lr = float(settings.optim["lr"])
    log.info("effective batch %d (loader.batch_size %d x %d process(es) x accumulate %d); lr %.3g (%s scaling)",
             batch * dist.world_size * trainer.accumulate_grad_batches, batch, dist.world_size,
             trainer.accumulate_grad_batches, lr * factor, trainer.lr_scaling)
    return lr * factor


def load_splits(data: dict, spec: TransformSpec, dist: DistInfo = SINGLE_PROCESS) -> DataSplits:
    """The data source `data` names, its arrays decoded and preprocessed once (under DDP rank 0 builds the
    cache, the others read it)."""
    with main_first(dist):
        splits = instantiate(data, _convert_="all").load(spec.preprocess, spec.pre_spec)
    log.info("data: %d train / %d val / %d test, %d classes, %d channel(s), %s", len(splits.train.labels),
             len(splits.val.labels), len(splits.test.labels), len(splits.classes), splits.in_chans, splits.input_size)
    return splits


@dataclass
class TrainingParts:
    """What one training step needs, built from the recipe and the data."""

    model: torch.nn.Module
    loaders: Loaders
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: torch.nn.Module
    channels_last: bool


def training_parts(settings: RecipeSettings, splits: DataSplits, spec: TransformSpec, device: torch.device,
                   dist: DistInfo = SINGLE_PROCESS) -> TrainingParts:
    """Model, loaders, optimiser, schedule and loss of a recipe (shared by `train` and `bench`)."""
    trainer = settings.trainer
    channels_last = trainer.channels_last and splits.spatial_dims == 2
    model = build_model(settings, splits, device, channels_last)
    if trainer.sync_batchnorm and dist.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # CUDA only (a torch limitation)
    loaders = build_loaders(splits, spec, settings.loader, settings.seed, device, dist)
    optimizer = build_optimizer(settings.optim, model, lr=scaled_lr(settings, dist))
    scheduler = build_scheduler(settings.sched, optimizer, len(loaders.train) // trainer.accumulate_grad_batches
                                or 1, trainer.max_epochs)
    weights = class_weights(trainer.class_weights, splits.train.labels, len(splits.classes))
    criterion = torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device),
                                          label_smoothing=float(trainer.label_smoothing))
    return TrainingParts(model, loaders, optimizer, scheduler, criterion, channels_last)
