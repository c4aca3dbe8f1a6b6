"""`medzoo bench recipe=NAME`: how fast a recipe trains on this machine, before committing hours to it.

The recipe's own data, transforms, model, precision and loader settings; the figures cover the whole step
(loading, augmentation, forward, backward, optimiser), and the estimate scales them to the recipe's epochs.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from medzoo.commands.common import data_group, run_directory
from medzoo.engine.precision import Precision
from medzoo.engine.recipe_parts import load_splits, training_parts
from medzoo.engine.recipe_settings import RecipeSettings
from medzoo.engine.reports import write_json
from medzoo.engine.runtime import device_name, resolve_device, seed_everything
from medzoo.engine.throughput import measure_inference, measure_training
from medzoo.engine.trainer import Trainer
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo.card import versions

log = logging.getLogger(__name__)


def bench(cfg: DictConfig) -> dict:
    """Measure the recipe in `cfg` and write bench.json into the run dir."""
    recipe = RecipeSettings.from_config(cfg, data_group(cfg))
    run_dir = run_directory()
    device = resolve_device(recipe.trainer.device)
    seed_everything(recipe.seed, False)
    precision = Precision.resolve(recipe.trainer.precision, device)
    spec = TransformSpec.from_config(cfg.transforms)
    splits = load_splits(recipe.data, spec)
    parts = training_parts(recipe, splits, spec, device)
    trainer = Trainer(parts.model, parts.optimizer, parts.scheduler, parts.criterion, device=device,
                      precision=precision, settings=recipe.trainer, channels_last=parts.channels_last,
                      classes=splits.classes, run_dir=run_dir, on_best=lambda *_: None)
    train = measure_training(trainer, parts.loaders.train, int(cfg.bench.steps), int(cfg.bench.warmup_steps))
    infer = measure_inference(parts.model, parts.loaders.val, precision, device, parts.channels_last,
                              int(cfg.bench.eval_steps))
    sizes = {name: len(splits.split(name).labels) for name in ("train", "val", "test")}
    epoch_s = sizes["train"] / train.images_per_s + sizes["val"] / infer.images_per_s
    result = {
        "recipe": cfg.recipe_name, "device": device_name(device), "precision": precision.name,
        "channels_last": parts.channels_last, "compile": recipe.trainer.compile,
        "batch_size": recipe.loader.batch_size, "num_workers": parts.loaders.train.num_workers,
        "in_chans": splits.in_chans, "input_size": list(splits.input_size), "samples": sizes,
        "train": train.as_dict(), "inference": infer.as_dict(),
        "estimate": {"epoch_s": epoch_s, "epochs": recipe.trainer.max_epochs,
                     "recipe_s": epoch_s * recipe.trainer.max_epochs + sizes["test"] / infer.images_per_s},
        "versions": versions(),
    }
    write_json(run_dir / "bench.json", result)
    log.info("%s on %s: train %.1f img/s (data wait %.0f %%), inference %.1f img/s; one epoch ~ %.0f s, "
             "the recipe (%d epochs) ~ %.1f min, decoding not included -> %s", cfg.recipe_name or "the configuration",
             result["device"], train.images_per_s, 100 * train.data_wait_fraction, infer.images_per_s, epoch_s,
             recipe.trainer.max_epochs, result["estimate"]["recipe_s"] / 60, run_dir / "bench.json")
    return result
