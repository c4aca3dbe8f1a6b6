"""`medzoo eval ckpt=PATH split=test|val`: a checkpoint's metrics on a split, with its own preprocessing."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from medzoo.commands.common import plain, run_directory
from medzoo.engine.checkpoint_metrics import checkpoint_metrics
from medzoo.engine.gallery_maps import GalleryMaps
from medzoo.engine.reports import plot_confusion, plot_reliability, write_json
from medzoo.engine.runtime import resolve_device
from medzoo.reporting.content import eval_report
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo import hub
from medzoo.zoo.factory import model_from_checkpoint

log = logging.getLogger(__name__)


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Evaluate `cfg.ckpt` on `cfg.split` and write metrics.json into the run dir."""
    run_dir = run_directory()
    device = resolve_device(cfg.trainer.device)
    path = hub.resolve(cfg.ckpt)
    model, card = model_from_checkpoint(path, device)
    samples = {}  # the evaluated split's arrays, for the report's thumbnails
    metrics = checkpoint_metrics(model, card, [cfg.split], plain(cfg.data), cfg.paths.cache_dir, device,
                                 cfg.trainer.precision, loader_overrides=plain(cfg.get("loader")),
                                 predictions_dir=run_dir, where=str(path), samples=samples,
                                 progress=bool(cfg.trainer.get("progress", True)))
    metrics.update(checkpoint=str(cfg.ckpt), recipe=card.recipe)
    write_json(run_dir / "metrics.json", metrics)
    plot_confusion(metrics[cfg.split]["confusion_matrix"], list(card.classes), run_dir / f"confusion_{cfg.split}.png",
                   f"{cfg.split}: {Path(cfg.ckpt).name}")
    plot_reliability(metrics[cfg.split]["calibration"], metrics[cfg.split]["ece"],
                     run_dir / f"reliability_{cfg.split}.png", cfg.split)
    steps = card.preprocessing
    pipeline = TransformSpec.from_card_steps(steps.backend, steps.pre, steps.eval, str(path)).pipeline("eval")
    maps = GalleryMaps(model, pipeline, card.classes, run_dir)
    eval_report(run_dir, cfg, card, samples, maps)  # report.html; a failure there is a warning
    log.info("%s accuracy %.4f (%d samples) -> %s (per sample: predictions_%s.csv)", cfg.split,
             metrics[cfg.split]["accuracy"], metrics[cfg.split]["num_samples"], run_dir / "metrics.json", cfg.split)
    return metrics
