"""`medzoo train`: train a recipe, keep the best model by validation, then evaluate it on the test split."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from medzoo.commands.common import data_group, run_directory
from medzoo.engine.card_builder import card_builder
from medzoo.engine.distributed import (
    broadcast,
    init_distributed,
    main_first,
    shutdown,
)
from medzoo.engine.gallery_maps import GalleryMaps
from medzoo.engine.loaders import eval_loader
from medzoo.engine.loggers import check_loggers, log_artifacts, open_loggers
from medzoo.engine.ood import summarise_or_warn
from medzoo.engine.precision import Precision
from medzoo.engine.recipe_parts import load_splits, training_parts
from medzoo.engine.recipe_settings import RecipeSettings
from medzoo.engine.reports import plot_confusion, plot_curves, plot_reliability, write_json, write_predictions
from medzoo.engine.runtime import device_name, resolve_device, seed_everything
from medzoo.engine.trainer import Trainer, detailed_metrics, predict_probs
from medzoo.errors import ConfigError
from medzoo.reporting.content import train_report
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo.card import now, versions
from medzoo.zoo.checkpoint import save_checkpoint
from medzoo.zoo.factory import model_from_checkpoint

log = logging.getLogger(__name__)


def resume_path(setting: str | None, run_dir: Path) -> Path | None:
    """`auto`: this run dir's last state if there is one; a path: that file (or that run dir's state).

    A finished run keeps its state only with trainer.keep_resume_state=true: `auto` in a finished run dir
    without one is an error (training it again from epoch 1 would overwrite its results).
    """
    if not setting:
        return None
    folder = run_dir if setting == "auto" else Path(setting).expanduser()
    path = folder / "checkpoints" / "last.pt" if setting == "auto" or folder.is_dir() else folder
    if path.exists():
        return path
    if path.parent.name == "checkpoints" and (path.parent.parent / "metrics.json").exists():
        raise ConfigError(f"trainer.resume={setting}: {path.parent.parent} holds a finished run without its resume "
                          "state (a run deletes last.pt at its end unless trainer.keep_resume_state=true). Start from "
                          "its weights in a new run dir (model.pretrained=PATH/checkpoints/best.safetensors "
                          "hydra.run.dir=NEW_DIR), or keep the state of future runs with "
                          "trainer.keep_resume_state=true.")
    if setting != "auto":
        raise ConfigError(f"trainer.resume={setting}: no resume state at {path}.")
    return None


def write_reports(run_dir: Path, metrics: dict, history: list, classes: list[str], plots: bool) -> None:
    """metrics.json and, with plots, training curves, confusion matrices and reliability diagrams."""
    write_json(run_dir / "metrics.json", metrics)
    if not plots:
        return
    plot_curves(history, run_dir / "curves.png")
    for split in ("val", "test", "test_deleaked"):
        if split in metrics:
            plot_confusion(metrics[split]["confusion_matrix"], classes, run_dir / f"confusion_{split}.png",
                           f"{split} (best epoch {metrics['best_epoch']})")
            plot_reliability(metrics[split]["calibration"], metrics[split]["ece"],
                             run_dir / f"reliability_{split}.png", split)


class TrainMetrics(dict):
    """metrics.json as a dict; `float()` of it is the value a sweep optimises (`hparams_search=...`, Hydra's Optuna
    sweeper): the best checkpoint's validation score on `trainer.monitor`."""

    def __float__(self) -> float:
        return float(self["val"][self["monitor"].removeprefix("val/")])


def train(cfg: DictConfig) -> TrainMetrics:
    """Run the recipe in `cfg`; returns the metrics written to metrics.json."""
    began, started = time.monotonic(), now()
    recipe = RecipeSettings.from_config(cfg, data_group(cfg))  # every setting checked before any work
    settings = recipe.trainer
    device = resolve_device(settings.device)
    dist = init_distributed(device.type)
    device = torch.device("cuda", dist.local_rank) if dist.enabled and device.type == "cuda" else device
    run_dir = Path(broadcast(str(run_directory()), dist))  # rank 0's run dir for every rank
    start = resume_path(settings.resume, run_dir)  # before any work: a finished run without its state stops here
    check_loggers(list(cfg.logger.loggers))  # an unknown logger or a tracker's missing package stops here too
    seed_everything(recipe.seed, settings.deterministic)
    precision = Precision.resolve(settings.precision, device)

    spec = TransformSpec.from_config(cfg.transforms)
    splits = load_splits(recipe.data, spec, dist)
    if dist.is_main:
        write_json(run_dir / "data_report.json", {"classes": splits.classes, "in_chans": splits.in_chans,
                                                   "input_size": splits.input_size, **splits.report})
    parts = training_parts(recipe, splits, spec, device, dist)
    model, loaders, channels_last = parts.model, parts.loaders, parts.channels_last

    checkpoints = run_dir / "checkpoints"
    card = card_builder(recipe, splits, model, spec, precision.name, channels_last)

    weights_dtype = getattr(torch, settings.weights_dtype)  # the metrics below are measured on what is stored

    def save_best(trained: torch.nn.Module, info: dict) -> None:
        save_checkpoint(checkpoints / "best.safetensors", trained, card(metrics={"val": info["val"]},
                                                                        epoch=info["epoch"]), dtype=weights_dtype)

    loggers = open_loggers(OmegaConf.to_container(cfg, resolve=True), run_dir) if dist.is_main else []
    trainer = Trainer(model, parts.optimizer, parts.scheduler, parts.criterion, device=device, precision=precision,
                      settings=settings, channels_last=channels_last, classes=splits.classes, run_dir=run_dir,
                      on_best=save_best, loggers=loggers, dist=dist, recipe=recipe.recipe_name)
    if start is not None:
        trainer.resume(start)
    progress = trainer.fit(loaders.train, loaders.val)

    with main_first(dist):  # rank 0 writes the final checkpoints before the others read best.safetensors
        if dist.is_main and settings.save_last:
            save_checkpoint(checkpoints / "last.safetensors", model, card(epoch=progress.epoch), dtype=weights_dtype)
    best, _ = model_from_checkpoint(checkpoints / "best.safetensors", device)
    best = best.to(memory_format=torch.channels_last) if channels_last else best

    def final(name: str, loader) -> dict:
        """The best model's detailed metrics on one split; each sample's answer in predictions_<split>.csv."""
        probs, labels = predict_probs(best, loader, device, precision, channels_last, dist,
                                      progress=settings.progress, desc=f"eval {name}")
        if dist.is_main:
            write_predictions(run_dir / f"predictions_{name}.csv", splits.split(name).keys, probs, labels,
                              splits.classes)
        return detailed_metrics(probs, labels, splits.classes)

    metrics = {"best_epoch": progress.best_epoch, "epochs": progress.epoch, "monitor": f"val/{settings.monitor}",
               "val": final("val", loaders.val)}
    if recipe.evaluate_test:
        metrics["test"] = final("test", loaders.test)
        for name in splits.extra_tests:  # e.g. test_deleaked: test images with no near-copy in training
            metrics[name] = final(name, eval_loader(splits, name, spec, recipe.loader, device, dist))
    if dist.is_main:  # OOD: eval-transformed training features (seeded subsample), threshold from validation
        ood = summarise_or_warn(best, splits, spec, precision, channels_last, recipe.seed) if settings.ood else None
        save_checkpoint(checkpoints / "best.safetensors", best,
                        card(metrics=metrics, epoch=progress.best_epoch).with_ood(ood), dtype=weights_dtype)
        write_reports(run_dir, metrics, progress.history, splits.classes, cfg.logger.plots)
        write_json(run_dir / "run.json", {  # where and how long: what a benchmark table states beside a figure
            "hardware": device_name(device), "processes": dist.world_size, "precision": precision.name,
            "started": started, "finished": now(), "seconds": round(time.monotonic() - began, 1),
            "versions": versions()})
        maps = GalleryMaps(best, spec.pipeline("eval"), splits.classes, run_dir) if cfg.logger.plots else None
        train_report(run_dir, cfg, splits, maps)  # report.html; a failure there is a warning
        log_artifacts(loggers, [run_dir / "report.html", run_dir / "metrics.json"], checkpoints / "best.safetensors")
        if not settings.keep_resume_state:  # the run is complete: its resume state is 3x the model, and done
            trainer.discard_resume_state()
    for logger in loggers:
        getattr(logger, "close", lambda: None)()
    shutdown(dist)
    summary = "  ".join(f"{s} acc {metrics[s]['accuracy']:.4f}" for s in ("val", "test", *splits.extra_tests)
                        if s in metrics)
    log.info("done: best epoch %d  %s  -> %s", progress.best_epoch, summary, run_dir)
    return TrainMetrics(metrics)
