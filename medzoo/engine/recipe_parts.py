"""A recipe's training parts from its config: the data, the model shaped by it, loaders, optimiser, schedule
and loss. Shared by `medzoo train` and `medzoo bench`, so that a benchmark runs exactly what training runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from sklearn.utils.class_weight import compute_class_weight

from medzoo.datasets.dataset import DataSplits
from medzoo.engine.distributed import SINGLE_PROCESS, DistInfo, main_first
from medzoo.engine.loaders import Loaders, build_loaders
from medzoo.engine.optim import build_optimizer, build_scheduler, freeze
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


def build_model(cfg: DictConfig, splits: DataSplits, device: torch.device, channels_last: bool) -> torch.nn.Module:
    """The recipe's model, shaped by the data (channels, classes, input size), on `device`."""
    options = {"norm": cfg.model.get("norm", "batch"), "stem": cfg.model.stem, "input_size": min(splits.input_size)}
    for key in ("width", "conv", "shortcut"):  # conv=acs: a 2D ResNet's kernels run on volumes (zoo/acs.py)
        if cfg.model.get(key) is not None:
            options[key] = cfg.model[key]
    if cfg.model.get("pretrained"):  # the architecture options belong to the weights, unless set explicitly
        options = {k: v for k, v in options.items() if k == "input_size" or v not in ("auto", "batch")}
    model = create_model(cfg.model.name, in_chans=splits.in_chans, num_classes=len(splits.classes),
                         spatial_dims=splits.spatial_dims, pretrained=cfg.model.get("pretrained"), **options)
    if cfg.trainer.get("freeze"):
        log.info("frozen: %d parameters in %s", freeze(model, list(cfg.trainer.freeze)), list(cfg.trainer.freeze))
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)


def scaled_lr(cfg: DictConfig, dist: DistInfo) -> float:
    """optim.lr, times the world size under trainer.lr_scaling=linear (the global batch grows with it)."""
    factor = dist.world_size if cfg.trainer.lr_scaling == "linear" else 1
    effective = cfg.data.batch_size * dist.world_size * cfg.trainer.accumulate_grad_batches
    log.info("effective batch %d (data.batch_size %d x %d process(es) x accumulate %d); lr %.3g (%s scaling)",
             effective, cfg.data.batch_size, dist.world_size, cfg.trainer.accumulate_grad_batches,
             cfg.optim.lr * factor, cfg.trainer.lr_scaling)
    return float(cfg.optim.lr) * factor


def load_splits(cfg: DictConfig, spec: TransformSpec, dist: DistInfo = SINGLE_PROCESS) -> DataSplits:
    """The recipe's data, decoded and preprocessed once (under DDP rank 0 builds the cache, the others read it)."""
    with main_first(dist):
        splits = instantiate(cfg.data, _convert_="all").load(spec.preprocess, spec.pre_spec)
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


def training_parts(cfg: DictConfig, splits: DataSplits, spec: TransformSpec, device: torch.device,
                   dist: DistInfo = SINGLE_PROCESS) -> TrainingParts:
    """Model, loaders, optimiser, schedule and loss of the recipe in `cfg` (shared by `train` and `bench`)."""
    channels_last = bool(cfg.trainer.channels_last) and splits.spatial_dims == 2
    model = build_model(cfg, splits, device, channels_last)
    if cfg.trainer.sync_batchnorm and dist.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # CUDA only (a torch limitation)
    loaders = build_loaders(splits, spec, cfg.data, cfg.seed, device, dist)
    optimizer = build_optimizer(cfg.optim, model, lr=scaled_lr(cfg, dist))
    scheduler = build_scheduler(cfg.sched, optimizer, len(loaders.train) // cfg.trainer.accumulate_grad_batches
                                or 1, cfg.trainer.max_epochs)
    weights = class_weights(cfg.trainer.class_weights, splits.train.labels, len(splits.classes))
    criterion = torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device),
                                          label_smoothing=float(cfg.trainer.label_smoothing))
    return TrainingParts(model, loaders, optimizer, scheduler, criterion, channels_last)
