"""`medzoo predict ckpt=PATH inputs=FILE_OR_DIR [explain=gradcam]`: class probabilities per input (CSV, JSON),
for images, volumes and DICOM series, with optional Grad-CAM overlays."""

from __future__ import annotations

import csv
import logging

import torch
from omegaconf import DictConfig

from medzoo.commands.common import run_directory
from medzoo.engine.explain import gradcam_maps, overlay_name, save_overlay
from medzoo.engine.inference import Preprocessor, list_inputs, probabilities
from medzoo.engine.precision import Precision
from medzoo.engine.reports import write_json
from medzoo.engine.runtime import resolve_device
from medzoo.errors import ConfigError, DataError
from medzoo.naming import unknown_name
from medzoo.zoo import hub
from medzoo.zoo.factory import model_from_checkpoint

log = logging.getLogger(__name__)
ON_ERROR = ("raise", "skip")
EXPLAIN = (None, "gradcam")


def check_choice(key: str, value: object, choices: tuple) -> None:
    """A setting that takes one of a few values: anything else is a ConfigError with the closest ones."""
    if value not in choices:
        names = [str(choice).lower() if choice is None else choice for choice in choices]
        raise ConfigError(f"{key}={value}: {unknown_name(key, str(value), names)}")


def predict(cfg: DictConfig) -> list[dict]:
    """Write predictions.csv and predictions.json into the run dir; returns the rows."""
    check_choice("on_error", cfg.on_error, ON_ERROR)
    check_choice("explain", cfg.explain, EXPLAIN)
    if isinstance(cfg.batch_size, bool) or not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size!r}: a whole number >= 1 expected.")
    run_dir = run_directory()
    device = resolve_device(cfg.trainer.device)
    path = hub.resolve(cfg.ckpt)
    model, card = model_from_checkpoint(path, device)
    preprocess, classes = Preprocessor(card, str(path)), list(card.classes)
    precision = Precision.resolve(cfg.trainer.precision or card.precision, device)
    rows, skipped, items = [], [], []
    for path in list_inputs(cfg.inputs):
        try:
            items += preprocess.items(path)
        except DataError as exc:
            if cfg.on_error != "skip":  # the readers' hint names the training key; predict's own is on_error
                raise DataError(str(exc).replace("data.on_error=skip", "on_error=skip")) from exc
            skipped.append({"path": str(path), "error": str(exc)})
    overlays = run_dir / "gradcam"
    for start in range(0, len(items), int(cfg.batch_size)):
        names, tensors = zip(*items[start:start + int(cfg.batch_size)])
        batch = torch.stack(tensors)
        probs = probabilities(model, batch, precision.autocast)
        heat = gradcam_maps(model, batch) if cfg.explain == "gradcam" else None
        for index, (name, p) in enumerate(zip(names, probs)):
            row = {"path": name, "prediction": classes[int(p.argmax())],
                   "probabilities": {c: float(v) for c, v in zip(classes, p)}}
            if heat is not None:
                overlays.mkdir(exist_ok=True)
                title = f"{row['prediction']} ({p.max():.2f})"
                row["gradcam"] = str(save_overlay(batch[index], heat[index], title, overlays / overlay_name(name)))
            rows.append(row)
    with open(run_dir / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "prediction", *classes])
        writer.writerows([r["path"], r["prediction"], *(f"{r['probabilities'][c]:.6f}" for c in classes)] for r in rows)
    write_json(run_dir / "predictions.json", {"checkpoint": str(cfg.ckpt), "classes": classes, "predictions": rows,
                                              "skipped": skipped})
    if skipped:
        log.warning("skipped %d unreadable file(s) (on_error=skip); listed in predictions.json", len(skipped))
    log.info("%d prediction(s) -> %s", len(rows), run_dir / "predictions.csv")
    return rows
