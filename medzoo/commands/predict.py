"""`medzoo predict ckpt=PATH inputs=FILE_OR_DIR`: class probabilities per input file (CSV and JSON)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from medzoo.commands.common import run_directory
from medzoo.datasets.images import IMAGE_EXTENSIONS, decode_image, to_channels
from medzoo.engine.precision import Precision
from medzoo.engine.reports import write_json
from medzoo.engine.runtime import resolve_device
from medzoo.errors import DataError
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo import hub
from medzoo.zoo.checkpoint import model_from_checkpoint

log = logging.getLogger(__name__)


def list_inputs(inputs: str) -> list[Path]:
    """One image file, or every image file below a folder (sorted)."""
    path = Path(inputs).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            return files
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {path}; set inputs=FILE_OR_DIR.")
    raise DataError(f"inputs not found: {path}. Set inputs=FILE_OR_DIR.")


def predict(cfg: DictConfig) -> list[dict]:
    """Write predictions.csv and predictions.json into the run dir; returns the rows."""
    run_dir = run_directory()
    device = resolve_device(cfg.trainer.device)
    model, card = model_from_checkpoint(hub.resolve(cfg.ckpt), device)
    spec = TransformSpec(card["preprocessing"]["pre"], eval=card["preprocessing"]["eval"], where=f"{cfg.ckpt} card")
    pipeline, classes = spec.pipeline("eval"), card["classes"]
    precision = Precision.resolve(cfg.trainer.precision or card["precision"], device)
    rows, skipped, files = [], [], list_inputs(cfg.inputs)
    for start in range(0, len(files), int(cfg.batch_size)):
        batch, names = [], []
        for path in files[start:start + int(cfg.batch_size)]:
            try:
                pixels = to_channels(decode_image(path).pixels, card["in_chans"])
            except DataError as exc:
                if cfg.on_error != "skip":
                    raise
                skipped.append({"path": str(path), "error": str(exc)})
                continue
            image = np.moveaxis(spec.preprocess(pixels), -1, 0)
            batch.append(torch.from_numpy(pipeline(image)))
            names.append(path)
        if not batch:
            continue
        with torch.no_grad(), precision.autocast():
            probs = torch.softmax(model(torch.stack(batch).to(device)).float(), dim=1).cpu().numpy()
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
