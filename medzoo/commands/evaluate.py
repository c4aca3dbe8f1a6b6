"""`medzoo eval ckpt=PATH split=test|val`: a checkpoint's metrics on a split, with its own preprocessing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medzoo.commands.common import run_directory
from medzoo.engine.loaders import eval_loader
from medzoo.engine.precision import Precision
from medzoo.engine.reports import plot_confusion, plot_reliability, write_json, write_predictions
from medzoo.engine.runtime import resolve_device
from medzoo.engine.trainer import detailed_metrics, predict_probs
from medzoo.errors import ConfigError, DataError
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo import hub
from medzoo.zoo.checkpoint import model_from_checkpoint, trained_channels_last

log = logging.getLogger(__name__)
SAFE_DATA_TARGET = "medzoo.datasets."


def data_config(card: dict[str, Any], overrides: DictConfig, cache_dir: str) -> DictConfig:
    """The checkpoint's data settings with every non-null command-line override applied."""
    stored = dict(card["config"]["data"])
    if not str(stored.get("_target_", "")).startswith(SAFE_DATA_TARGET):
        raise ConfigError(f"checkpoint data source {stored.get('_target_')!r} is not a medzoo dataset; refusing it.")
    stored["cache_dir"] = cache_dir
    stored.update({k: v for k, v in OmegaConf.to_container(overrides, resolve=True).items() if v is not None})
    return OmegaConf.create(stored)


def checkpoint_metrics(model: torch.nn.Module, card: dict, split_names: list[str], data_overrides: DictConfig,
                       cache_dir: str, device: torch.device, precision_name: str | None = None,
                       predictions_dir: Path | None = None) -> dict[str, dict]:
    """Metrics of a loaded checkpoint on `split_names`, through the checkpoint's own data and preprocessing;
    with `predictions_dir`, also each sample's prediction as predictions_<split>.csv there."""
    spec = TransformSpec.from_card(card)
    data_cfg = data_config(card, data_overrides, cache_dir)
    splits = instantiate(data_cfg, _convert_="all").load(spec.preprocess, spec.pre_spec)
    if list(splits.classes) != list(card["classes"]):
        raise DataError(f"the data's classes {splits.classes} differ from the checkpoint's {card['classes']}; "
                        "point data.root at the dataset the checkpoint was trained for.")
    if splits.in_chans != card["in_chans"]:
        raise DataError(f"the data has {splits.in_chans} channel(s), the checkpoint expects {card['in_chans']}; "
                        f"use data prepared the same way (for stacks: medzoo prepare data.layout=slices "
                        f"data.channels={card['in_chans']}).")
    precision = Precision.resolve(precision_name or card["precision"], device)
    channels_last = trained_channels_last(card)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    metrics = {}
    for name in split_names:
        probs, labels = predict_probs(model, eval_loader(splits, name, spec, data_cfg, device), device, precision,
                                      channels_last)
        metrics[name] = detailed_metrics(probs, labels, splits.classes)
        if predictions_dir is not None:
            write_predictions(predictions_dir / f"predictions_{name}.csv", splits.split(name).keys, probs, labels,
                              splits.classes)
    return metrics


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Evaluate `cfg.ckpt` on `cfg.split` and write metrics.json into the run dir."""
    run_dir = run_directory()
    device = resolve_device(cfg.trainer.device)
    model, card = model_from_checkpoint(hub.resolve(cfg.ckpt), device)
    metrics = checkpoint_metrics(model, card, [cfg.split], cfg.data, cfg.paths.cache_dir, device,
                                 cfg.trainer.precision, predictions_dir=run_dir)
    metrics.update(checkpoint=str(cfg.ckpt), recipe=card.get("recipe"))
    write_json(run_dir / "metrics.json", metrics)
    plot_confusion(metrics[cfg.split]["confusion_matrix"], card["classes"], run_dir / f"confusion_{cfg.split}.png",
                   f"{cfg.split}: {Path(cfg.ckpt).name}")
    plot_reliability(metrics[cfg.split]["calibration"], metrics[cfg.split]["ece"],
                     run_dir / f"reliability_{cfg.split}.png", cfg.split)
    log.info("%s accuracy %.4f (%d samples) -> %s (per sample: predictions_%s.csv)", cfg.split,
             metrics[cfg.split]["accuracy"], metrics[cfg.split]["num_samples"], run_dir / "metrics.json", cfg.split)
    return metrics
