"""`medzoo predict ckpt=PATH inputs=FILE_OR_DIR`: class probabilities per input file (CSV and JSON)."""

from __future__ import annotations

import csv
import logging

import torch
from omegaconf import DictConfig

from medzoo.commands.common import run_directory
from medzoo.engine.inference import Preprocessor, list_inputs, probabilities
from medzoo.engine.precision import Precision
from medzoo.engine.reports import write_json
from medzoo.engine.runtime import resolve_device
from medzoo.errors import DataError
from medzoo.zoo import hub
from medzoo.zoo.checkpoint import model_from_checkpoint

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> list[dict]:
    """Write predictions.csv and predictions.json into the run dir; returns the rows."""
    run_dir = run_directory()
    device = resolve_device(cfg.trainer.device)
    model, card = model_from_checkpoint(hub.resolve(cfg.ckpt), device)
    preprocess, classes = Preprocessor(card), card["classes"]
    precision = Precision.resolve(cfg.trainer.precision or card["precision"], device)
    rows, skipped, files = [], [], list_inputs(cfg.inputs)
    for start in range(0, len(files), int(cfg.batch_size)):
        batch, names = [], []
        for path in files[start:start + int(cfg.batch_size)]:
            try:
                batch.append(preprocess.file(path))
            except DataError as exc:
                if cfg.on_error != "skip":
                    raise
                skipped.append({"path": str(path), "error": str(exc)})
                continue
            names.append(path)
        if not batch:
            continue
        probs = probabilities(model, torch.stack(batch), precision.autocast)
        for path, p in zip(names, probs):
            rows.append({"path": str(path), "prediction": classes[int(p.argmax())],
                         "probabilities": {c: float(v) for c, v in zip(classes, p)}})
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
