"""`medzoo train`: train a recipe, keep the best model by validation, then evaluate it on the test split."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from sklearn.utils.class_weight import compute_class_weight

from medzoo.commands.common import run_directory
from medzoo.engine.card import build_card
from medzoo.engine.loaders import build_loaders
from medzoo.engine.loggers import LOGGERS
from medzoo.engine.optim import build_optimizer, build_scheduler
from medzoo.engine.precision import Precision
from medzoo.engine.reports import plot_confusion, plot_curves, plot_reliability, write_json
from medzoo.engine.runtime import resolve_device, seed_everything
from medzoo.engine.trainer import Trainer, evaluate
from medzoo.errors import ConfigError
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo import create_model
from medzoo.zoo.checkpoint import model_from_checkpoint, save_checkpoint

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


def resume_path(setting: str | None, run_dir: Path) -> Path | None:
    """`auto`: this run dir's last state if there is one; a path: that file (or that run dir's state)."""
    if not setting:
        return None
    if setting == "auto":
        path = run_dir / "checkpoints" / "last.pt"
        return path if path.exists() else None
    path = Path(setting).expanduser()
    path = path / "checkpoints" / "last.pt" if path.is_dir() else path
    if not path.exists():
        raise ConfigError(f"trainer.resume={setting}: no resume state at {path}.")
    return path


def train(cfg: DictConfig) -> dict:
    """Run the recipe in `cfg`; returns the metrics written to metrics.json."""
    run_dir = run_directory()
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    device = resolve_device(cfg.trainer.device)
    precision = Precision.resolve(cfg.trainer.precision, device)

    spec = TransformSpec.from_config(cfg.transforms)
    splits = instantiate(cfg.data, _convert_="all").load(spec.preprocess, spec.pre_spec)
    write_json(run_dir / "data_report.json", {"classes": splits.classes, "in_chans": splits.in_chans,
                                               "input_size": splits.input_size, **splits.report})
    log.info("data: %d train / %d val / %d test, %d classes, %d channel(s), %s", len(splits.train.labels),
             len(splits.val.labels), len(splits.test.labels), len(splits.classes), splits.in_chans, splits.input_size)

    model = create_model(cfg.model.name, in_chans=splits.in_chans, num_classes=len(splits.classes),
                         spatial_dims=splits.spatial_dims, stem=cfg.model.stem, input_size=min(splits.input_size))
    channels_last = bool(cfg.trainer.channels_last) and splits.spatial_dims == 2
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    loaders = build_loaders(splits, spec, cfg.data, cfg.seed, device)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.sched, optimizer, len(loaders.train) // cfg.trainer.accumulate_grad_batches
                                or 1, cfg.trainer.max_epochs)
    weights = class_weights(cfg.trainer.class_weights, splits.train.labels, len(splits.classes))
    criterion = torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device),
                                          label_smoothing=float(cfg.trainer.label_smoothing))

    checkpoints = run_dir / "checkpoints"
    card = partial(build_card, cfg, splits, model, spec, precision.name)

    def save_best(trained: torch.nn.Module, info: dict) -> None:
        save_checkpoint(checkpoints / "best.safetensors", trained, card(metrics={"val": info["val"]},
                                                                        epoch=info["epoch"]))

    loggers = [LOGGERS[name](run_dir) for name in cfg.logger.loggers]
    trainer = Trainer(model, optimizer, scheduler, criterion, device=device, precision=precision,
                      settings=cfg.trainer, channels_last=channels_last, classes=splits.classes, run_dir=run_dir, on_best=save_best, loggers=loggers)
    start = resume_path(cfg.trainer.resume, run_dir)
    if start is not None:
        trainer.resume(start)
    progress = trainer.fit(loaders.train, loaders.val)
    save_checkpoint(checkpoints / "last.safetensors", model, card(epoch=progress.epoch))

    best, _ = model_from_checkpoint(checkpoints / "best.safetensors", device)
    best = best.to(memory_format=torch.channels_last) if channels_last else best
    metrics = {"best_epoch": progress.best_epoch, "epochs": progress.epoch, "monitor": f"val/{cfg.trainer.monitor}",
               "val": evaluate(best, loaders.val, splits.classes, device, precision, channels_last, detailed=True)}
    if cfg.evaluate_test:
        metrics["test"] = evaluate(best, loaders.test, splits.classes, device, precision, channels_last,
                                   detailed=True)
    save_checkpoint(checkpoints / "best.safetensors", best, card(metrics=metrics, epoch=progress.best_epoch))
    write_json(run_dir / "metrics.json", metrics)
    if cfg.logger.plots:
        plot_curves(progress.history, run_dir / "curves.png")
        for split in ("val", "test"):
            if split in metrics:
                plot_confusion(metrics[split]["confusion_matrix"], splits.classes,
                               run_dir / f"confusion_{split}.png", f"{split} (best epoch {progress.best_epoch})")
                plot_reliability(metrics[split]["calibration"], metrics[split]["ece"],
                                 run_dir / f"reliability_{split}.png", split)
    for logger in loggers:
        getattr(logger, "close", lambda: None)()
    summary = "  ".join(f"{s} acc {metrics[s]['accuracy']:.4f}" for s in ("val", "test") if s in metrics)
    log.info("done: best epoch %d  %s  -> %s", progress.best_epoch, summary, run_dir)
    return metrics
