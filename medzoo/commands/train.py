"""`medzoo train`: train a recipe, keep the best model by validation, then evaluate it on the test split."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from medzoo.commands.common import run_directory
from medzoo.datasets.dataset import DataSplits
from medzoo.engine.distributed import (
    broadcast,
    init_distributed,
    main_first,
    shutdown,
)
from medzoo.engine.loaders import eval_loader
from medzoo.engine.loggers import LOGGERS
from medzoo.engine.ood import summarise_or_warn
from medzoo.engine.precision import Precision
from medzoo.engine.recipe_parts import load_splits, training_parts
from medzoo.engine.reports import plot_confusion, plot_curves, plot_reliability, write_json, write_predictions
from medzoo.engine.runtime import resolve_device, seed_everything
from medzoo.engine.settings import TrainerSettings
from medzoo.engine.trainer import Trainer, detailed_metrics, predict_probs
from medzoo.errors import ConfigError
from medzoo.reporting.content import train_report
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo.card import InputSpec, ModelCard, Preprocessing, Provenance, now, versions
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


def _data_group(data: dict) -> str | None:
    """The data config this run used (conf/data/NAME.yaml): Hydra's choice, else the data's name."""
    try:
        choice = HydraConfig.get().runtime.choices.get("data")
    except ValueError:  # not inside a Hydra app (called from Python)
        choice = None
    return choice or data.get("name")


def card_builder(cfg: DictConfig, splits: DataSplits, model: torch.nn.Module, spec: TransformSpec, precision: str,
                 channels_last: bool):
    """A function (metrics, epoch) -> the ModelCard of `model` trained by `cfg` on `splits`."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    prepared = splits.report.get("prepared_settings", {})  # how `medzoo prepare` laid the sources out
    laid_out = {**prepared, **{k: v for k, v in data.items() if v is not None}}
    layout = "volume" if splits.spatial_dims == 3 else ("slices" if laid_out.get("layout") == "slices" else "image")
    channels = laid_out.get("channels")
    input_spec = InputSpec(
        size=tuple(splits.input_size), layout=layout, channels=channels if isinstance(channels, int) else None,
        depth_mode=laid_out.get("depth_mode"), memory_format="channels_last" if channels_last else "contiguous",
        reader=laid_out.get("reader") or "auto", reader_options=dict(laid_out.get("reader_kwargs") or {}))
    provenance = Provenance(
        recipe=cfg.get("recipe_name"), data_name=data.get("name"), data_group=_data_group(data),
        data_settings={k: v for k, v in data.items() if k != "_target_"}, fingerprint=splits.fingerprint,
        num_train=len(splits.train.labels), num_val=len(splits.val.labels), num_test=len(splits.test.labels),
        config=OmegaConf.to_container(cfg, resolve=True), versions=versions(), created=now())
    card = ModelCard(
        arch=model.arch, in_chans=splits.in_chans, num_classes=len(splits.classes), classes=tuple(splits.classes),
        spatial_dims=splits.spatial_dims,
        model_kwargs={"stem": model.stem, "norm": getattr(model, "norm", "batch"), "width": getattr(model, "width", 1.0),
                      **{key: getattr(model, key) for key in ("conv", "shortcut")  # ResNet options (strings);
                         if isinstance(getattr(model, key, None), str)    # another model's `conv` may be a layer
                         and getattr(model, key) not in ("standard", "projection")}},
        input=input_spec, preprocessing=Preprocessing.from_steps(**spec.card()),
        precision=precision, provenance=provenance)
    # what every reader will check, checked before training starts (e.g. class folder names)
    ModelCard.from_dict(card.to_dict(), f"the card for this run's checkpoints ({cfg.get('recipe_name') or 'no recipe'})")

    def build(metrics: dict | None = None, epoch: int | None = None) -> ModelCard:
        return card.with_metrics(metrics or {}, epoch=epoch)

    return build


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


def train(cfg: DictConfig) -> dict:
    """Run the recipe in `cfg`; returns the metrics written to metrics.json."""
    settings = TrainerSettings.from_config(cfg.trainer)  # every trainer setting checked before any work
    if not isinstance(cfg.data.get("batch_size"), int) or isinstance(cfg.data.batch_size, bool) \
            or cfg.data.batch_size < 1:
        raise ConfigError(f"data.batch_size={cfg.data.get('batch_size')!r}: a whole number >= 1 expected.")
    device = resolve_device(settings.device)
    dist = init_distributed(device.type)
    device = torch.device("cuda", dist.local_rank) if dist.enabled and device.type == "cuda" else device
    run_dir = Path(broadcast(str(run_directory()), dist))  # rank 0's run dir for every rank
    start = resume_path(settings.resume, run_dir)  # before any work: a finished run without its state stops here
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    precision = Precision.resolve(cfg.trainer.precision, device)

    spec = TransformSpec.from_config(cfg.transforms)
    splits = load_splits(cfg, spec, dist)
    if dist.is_main:
        write_json(run_dir / "data_report.json", {"classes": splits.classes, "in_chans": splits.in_chans,
                                                   "input_size": splits.input_size, **splits.report})
    parts = training_parts(cfg, splits, spec, device, dist)
    model, loaders, channels_last = parts.model, parts.loaders, parts.channels_last

    checkpoints = run_dir / "checkpoints"
    card = card_builder(cfg, splits, model, spec, precision.name, channels_last)

    weights_dtype = getattr(torch, settings.weights_dtype)  # the metrics below are measured on what is stored

    def save_best(trained: torch.nn.Module, info: dict) -> None:
        save_checkpoint(checkpoints / "best.safetensors", trained, card(metrics={"val": info["val"]},
                                                                        epoch=info["epoch"]), dtype=weights_dtype)

    loggers = [LOGGERS[name](run_dir) for name in cfg.logger.loggers] if dist.is_main else []
    trainer = Trainer(model, parts.optimizer, parts.scheduler, parts.criterion, device=device, precision=precision,
                      settings=settings, channels_last=channels_last, classes=splits.classes, run_dir=run_dir,
                      on_best=save_best, loggers=loggers, dist=dist, recipe=cfg.get("recipe_name"))
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
        probs, labels = predict_probs(best, loader, device, precision, channels_last, dist)
        if dist.is_main:
            write_predictions(run_dir / f"predictions_{name}.csv", splits.split(name).keys, probs, labels,
                              splits.classes)
        return detailed_metrics(probs, labels, splits.classes)

    metrics = {"best_epoch": progress.best_epoch, "epochs": progress.epoch, "monitor": f"val/{cfg.trainer.monitor}",
               "val": final("val", loaders.val)}
    if cfg.evaluate_test:
        metrics["test"] = final("test", loaders.test)
        for name in splits.extra_tests:  # e.g. test_deleaked: test images with no near-copy in training
            metrics[name] = final(name, eval_loader(splits, name, spec, cfg.data, device, dist))
    if dist.is_main:  # OOD: eval-transformed training features (seeded subsample), threshold from validation
        ood = summarise_or_warn(best, splits, spec, precision, channels_last, cfg.seed) if settings.ood else None
        save_checkpoint(checkpoints / "best.safetensors", best,
                        card(metrics=metrics, epoch=progress.best_epoch).with_ood(ood), dtype=weights_dtype)
        write_reports(run_dir, metrics, progress.history, splits.classes, cfg.logger.plots)
        train_report(run_dir, cfg, splits)  # report.html; a failure there is a warning
        if not settings.keep_resume_state:  # the run is complete: its resume state is 3x the model, and done
            trainer.discard_resume_state()
    for logger in loggers:
        getattr(logger, "close", lambda: None)()
    shutdown(dist)
    summary = "  ".join(f"{s} acc {metrics[s]['accuracy']:.4f}" for s in ("val", "test", *splits.extra_tests)
                        if s in metrics)
    log.info("done: best epoch %d  %s  -> %s", progress.best_epoch, summary, run_dir)
    return metrics
