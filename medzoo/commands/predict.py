"""`medzoo predict ckpt=PATH inputs=FILE_OR_DIR [explain=gradcam|gradcam++ explain.layer=auto|NAME]`: class
probabilities per input (CSV, JSON), for images, volumes and DICOM series, with optional Grad-CAM overlays."""

from __future__ import annotations

import csv
import logging

from omegaconf import DictConfig, OmegaConf

from medzoo.close_names import unknown_name
from medzoo.commands.common import run_directory
from medzoo.engine.explain import METHODS, check_layer_name, choose_layer, class_activation_maps
from medzoo.engine.explain_overlay import overlay_name, save_overlay
from medzoo.engine.inference import csv_value, list_inputs, volume_summaries, write_volume_summaries
from medzoo.engine.predictor import Predictor
from medzoo.engine.reports import write_json
from medzoo.errors import ConfigError, DataError
from medzoo.progress import progress
from medzoo.reporting.content import predict_report

log = logging.getLogger(__name__)
ON_ERROR = ("raise", "skip")
EXPLAIN = (None, "gradcam", "gradcam++")


def check_choice(key: str, value: object, choices: tuple) -> None:
    """A setting that takes one of a few values: anything else is a ConfigError with the closest ones."""
    if value not in choices:
        names = [str(choice).lower() if choice is None else choice for choice in choices]
        raise ConfigError(f"{key}={value}: {unknown_name(key, str(value), names)}")


def explain_settings(cfg: DictConfig) -> tuple[str | None, str]:
    """(method, layer) from the `explain` group (explain=gradcam explain.layer=layer3), or from the plain string
    that `explain` was before issue 16 (explain: gradcam), which explains at the automatic layer."""
    node = cfg.get("explain")
    if OmegaConf.is_dict(node):
        return node.get("method"), str(node.get("layer") or "auto")
    return node, "auto"


def predict(cfg: DictConfig) -> list[dict]:
    """Write predictions.csv and predictions.json into the run dir; returns the rows."""
    check_choice("on_error", cfg.on_error, ON_ERROR)
    method, layer = explain_settings(cfg)
    check_choice("explain", method, EXPLAIN)
    if isinstance(cfg.batch_size, bool) or not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size!r}: a whole number >= 1 expected.")
    run_dir = run_directory()
    predictor = Predictor(cfg.ckpt, cfg.trainer.device, cfg.trainer.precision)
    model, card, classes = predictor.model, predictor.card, predictor.classes
    if method:
        check_layer_name(model, layer)  # a typo fails here, before any input is read
    rows, skipped, items = [], [], []
    shown = bool(cfg.trainer.get("progress", True))
    for path in progress(list_inputs(cfg.inputs), desc="predict read", unit="files", enabled=shown):
        try:
            items += predictor.preprocess.items(path)
        except DataError as exc:
            if cfg.on_error != "skip":  # the readers' hint names the training key; predict's own is on_error
                raise DataError(str(exc).replace("data.on_error=skip", "on_error=skip")) from exc
            skipped.append({"path": str(path), "error": str(exc)})
    overlays, target, empty = run_dir / "gradcam", None, 0
    for answered in predictor.answer(items, int(cfg.batch_size), progress=shown):
        names, batch, probs = answered.names, answered.batch, answered.probs
        if method and target is None:
            target = choose_layer(model, batch[:1], layer)
            log.info("%s on %s", method, target.describe())
        cams = class_activation_maps(model, batch, target.name, method, probs.argmax(1), names) if method else None
        for index, (name, p) in enumerate(zip(names, probs)):
            row = predictor.row(name, p, answered.scores[index])
            if cams is not None:
                overlays.mkdir(exist_ok=True)
                title = f"{name[-60:]}\n{row['prediction']} ({p.max():.2f}), {METHODS[method]} at {target.name}"
                if cams.empty[index]:
                    row["gradcam_empty"], empty, title = cams.empty[index], empty + 1, title + ": shows nothing"
                row["gradcam"] = str(save_overlay(batch[index], cams.heat[index], title, overlays / overlay_name(name),
                                                  label=METHODS[method]))
            rows.append(row)
    with open(run_dir / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "prediction", *classes, "ood_score", "ood"])
        writer.writerows([r["path"], r["prediction"], *(f"{r['probabilities'][c]:.6f}" for c in classes),
                          csv_value(r["ood_score"]), csv_value(r["ood"])] for r in rows)
    volumes = volume_summaries(rows)  # a 2D model given volumes: one row per volume besides its slices' rows
    if volumes:
        write_volume_summaries(run_dir / "volumes.csv", volumes)
    write_json(run_dir / "predictions.json", {"checkpoint": str(cfg.ckpt), "classes": classes, "predictions": rows,
                                              "volumes": volumes, "skipped": skipped, "explain": None if target is None else {
                                                  "method": method, "layer": target.name,
                                                  "map_size": list(target.map_size), "empty_maps": empty}})
    if empty:
        log.warning("%d of %d %s map(s) show nothing at %s (why: gradcam_empty in predictions.json)", empty,
                    len(rows), method, target.name)
    if any(r["ood"] for r in (*rows, *volumes)):
        log.warning("%d of %d prediction(s)%s unlike the training data (ood=true): treat them with care",
                    sum(bool(r["ood"]) for r in rows), len(rows),
                    f", {sum(bool(v['ood']) for v in volumes)} of {len(volumes)} volume(s)" if volumes else "")
    if skipped:
        log.warning("skipped %d unreadable file(s) (on_error=skip); listed in predictions.json", len(skipped))
    predict_report(run_dir, cfg, card, rows, skipped, items)  # report.html; a failure there is a warning
    log.info("%d prediction(s) -> %s", len(rows), run_dir / "predictions.csv")
    return rows
