"""What report.html shows for `medzoo train`, `eval` and `predict`, gathered from the run directory (command
line, config, data_report.json, metrics.csv, metrics.json, predictions_<split>.csv, the plots) and from what the
command holds in memory (the samples behind the thumbnails, the model card). A missing piece is left out."""

from __future__ import annotations

import csv
import json
import shlex
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf

from medzoo.datasets.arrays import SplitArrays
from medzoo.engine.gallery_maps import PER_GALLERY, GalleryMaps
from medzoo.engine.reports import plot_curves, plot_reliability
from medzoo.reporting.render import array_thumbnail, png_file_uri, write_report
from medzoo.zoo.card import ModelCard
from medzoo.zoo.checkpoint import read_card

MAIN_SPLITS = ("val", "test", "test_deleaked")  # shown first, in this order; any other split of metrics.json follows
GALLERY_SPLITS = ("val", "test")  # the others (test_deleaked, val_<source>) are subsets of these
GALLERY_SIZE = 8  # thumbnails per row: most confident mistakes, least confident correct answers
PREDICT_SHOWN = 48  # predict: rows listed with a thumbnail, least confident first
MAX_LISTED = 200  # skipped files listed
LISTS = ("skipped_files", "ignored_files")  # data_report.json's file lists: listed apart, not as figures
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "auc")


# --- every kind ----------------------------------------------------------------------------------------
def run_section(run_dir: Path, command: str, cfg: DictConfig | None) -> dict[str, Any]:
    """The command line (from Hydra's record in run_dir/.hydra) and the resolved config."""
    words = [command]
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        hydra = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {})
        words = [hydra.get("job", {}).get("config_name") or command]
        overrides = hydra.get("overrides", {})
        words += list(overrides.get("task") or [])
        words += [o for o in overrides.get("hydra") or [] if not o.startswith("hydra.mode=")]
    if cfg is not None:
        try:
            config = OmegaConf.to_yaml(cfg, resolve=True)
        except Exception:  # noqa: BLE001 -- an unresolvable value: show the config as written
            config = OmegaConf.to_yaml(cfg)
    else:
        path = run_dir / ".hydra" / "config.yaml"
        config = path.read_text() if path.is_file() else None
    return {"command": "medzoo " + " ".join(shlex.quote(str(word)) for word in words), "run_dir": str(run_dir),
            "config": config}


def card_section(card: ModelCard | None) -> dict[str, Any] | None:
    """The checkpoint's card: its main fields, the metrics it records and the whole card as JSON."""
    if card is None:
        return None
    prov, spec, steps = card.provenance, card.input, card.preprocessing
    options = ", ".join(f"{k}={v}" for k, v in card.model_kwargs.items())
    facts = [
        ("architecture", f"{card.arch} ({options})" if options else card.arch),
        ("classes", ", ".join(card.classes)),
        ("input", f"{card.in_chans} channel(s), {'x'.join(map(str, spec.size or ()))} {spec.layout}, "
                  f"{card.spatial_dims}D, {spec.memory_format}, reader {spec.reader}"),
        ("preprocessing", f"{steps.backend}: pre [{_steps(steps.pre)}], eval [{_steps(steps.eval)}]"),
        ("precision", card.precision),
        ("recipe", prov.recipe or "–"),
        ("data", f"{prov.data_name or '–'} (config {prov.data_group or '–'}), {prov.num_train} train / "
                 f"{prov.num_val} val / {prov.num_test} test, {prov.fingerprint or 'no fingerprint'}"),
        ("epoch", prov.epoch if prov.epoch is not None else "–"),
        ("created", prov.created or "–"),
        ("versions", ", ".join(f"{k} {v}" for k, v in prov.versions.items())),
        ("license", prov.license or "–"),
        ("intended use", prov.intended_use or "–"),
        ("out-of-distribution", _ood_fact(card.ood)),
    ]
    metrics = [{"split": name, **{key: values.get(key) for key in (*HEADLINE, "num_samples")}}
               for name, values in card.metrics.items() if isinstance(values, Mapping) and "accuracy" in values]
    shown = card.to_dict()
    if card.ood is not None:  # its arrays (hundreds of kB) by their shapes; the numbers stay in the checkpoint
        shown["ood"] = {key: [_shapes(layer) for layer in value] if key == "layers" else _shape(value)
                        for key, value in card.ood.items()}
    return {"facts": facts, "metrics": metrics, "json": json.dumps(shown, indent=2, default=str)}


def _ood_fact(ood: Mapping[str, Any] | None) -> str:
    if ood is None:
        return "no summary"
    layers = ood.get("layers") or [ood]  # mahalanobis_pca: one layer, its fields at the top
    described = ", ".join(f"{layer['feature_layer']} ({layer['feature_dim']} features, k {layer['k']})"
                          for layer in layers)
    return (f"{ood['method']} on {described}, threshold {ood['threshold']:.3g} ({ood['percentile']:g}th "
            f"percentile of {ood.get('num_val')} validation scores)")


def _shape(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    return f"[{len(value)} x {len(value[0])} numbers]" if value and isinstance(value[0], list) else \
        f"[{len(value)} numbers]"


def _shapes(layer: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _shape(value) for key, value in layer.items()}


def _steps(steps: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(step.get("name", "?") for step in steps)


# --- train and eval ------------------------------------------------------------------------------------
def data_section(run_dir: Path, counts: dict[str, Counter], classes: Sequence[str],
                 facts: Sequence[tuple[str, Any]] = ()) -> dict[str, Any] | None:
    """The samples per split and class, `facts`, and data_report.json (when the command wrote one): its figures
    and every skipped file."""
    path = run_dir / "data_report.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    if not report and not counts:
        return None
    facts = [*facts, *((key, _short(value)) for key, value in report.items()
                       if not isinstance(value, dict) and key not in LISTS)]
    groups = [{"name": name, "facts": [(k, _short(v)) for k, v in value.items() if not isinstance(v, (dict, list))]}
              for name, value in _nested(report)]
    skipped = _skipped(report)
    return {"facts": facts, "groups": [g for g in groups if g["facts"]], "has_report": bool(report),
            "skipped": skipped[:MAX_LISTED],
            "skipped_total": len(skipped), "classes": list(classes),
            "counts": [{"split": name, "per_class": [count.get(i, 0) for i in range(len(classes))],
                        "total": sum(count.values())} for name, count in counts.items()]}


def _nested(report: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """The dicts inside data_report.json (per split, per source), by dotted name."""
    found = []
    for key, value in report.items():
        if isinstance(value, dict) and key != "skip_reasons":
            found.append((prefix + key, value))
            found += _nested(value, f"{prefix}{key}.")
    return found


def _skipped(report: dict) -> list[tuple[str, str]]:
    """(file, reason) for every file data_report.json says was skipped, at any depth."""
    found: dict[str, str] = {}
    reasons = report.get("skip_reasons")
    for key in report.get("skipped_files") or []:
        found[str(key)] = str(reasons.get(key, "")) if isinstance(reasons, dict) else ""
    for _, value in _nested(report):
        for key in value.get("skipped_files") or []:
            reasons = value.get("skip_reasons")
            found.setdefault(str(key), str(reasons.get(key, "")) if isinstance(reasons, dict) else "")
    return sorted(found.items())


def _short(value: Any) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 300 else text[:300] + " …"


def curves_section(run_dir: Path) -> dict[str, Any] | None:
    """metrics.csv as a table and curves.png (drawn here when the run made no plots)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    picture = png_file_uri(run_dir / "curves.png")
    if picture is None and "train/loss" in rows[0]:
        history = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in rows]
        picture = _drawn(lambda target: plot_curves(history, target))
    return {"picture": picture, "header": list(rows[0]), "rows": [[_cell(v) for v in row.values()] for row in rows]}


def _cell(text: str | None) -> Any:
    try:
        number = float(text)
    except (TypeError, ValueError):
        return text or ""
    return int(number) if number.is_integer() else number


def _drawn(draw: Callable[[Path], Any]) -> str | None:
    """A plot drawn into a temporary PNG, as a data URI."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "plot.png"
        draw(target)
        return png_file_uri(target)


def split_panels(run_dir: Path, metrics: dict[str, Any], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One panel per evaluated split of metrics.json: headline metrics with their 95 % intervals, confusion
    matrix, per-class figures, reliability diagram and ECE."""
    names = [n for n in MAIN_SPLITS if n in metrics]
    names += [n for n, v in metrics.items() if n not in names and isinstance(v, dict) and "confusion_matrix" in v]
    return [_panel(run_dir, name, metrics[name], classes) for name in names]


def _panel(run_dir: Path, name: str, values: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    ci = values.get("ci95") or {}
    matrix = np.asarray(values["confusion_matrix"], dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    confusion = [[{"count": int(c), "share": float(s)} for c, s in zip(row, share)]
                 for row, share in zip(matrix, shares)]
    reliability = png_file_uri(run_dir / f"reliability_{name}.png")
    if reliability is None and values.get("calibration"):
        reliability = _drawn(lambda target: plot_reliability(values["calibration"], values["ece"], target, name))
    per_class = [{"name": cls, **{k: values.get("per_class", {}).get(cls, {}).get(k) for k in
                                  ("precision", "recall", "f1", "support")}} for cls in classes]
    return {"name": name, "num_samples": values.get("num_samples", int(matrix.sum())), "classes": list(classes),
            "headline": [{"name": key, "value": values.get(key), "ci": ci.get(key)} for key in HEADLINE
                         if key in values],
            "ece": values.get("ece"), "confusion": confusion, "per_class": per_class, "reliability": reliability}


def galleries(run_dir: Path, split_names: Sequence[str], samples: Callable[[str], SplitArrays | None],
              maps: GalleryMaps | None = None) -> list[dict[str, Any]]:
    """Per split with a predictions_<split>.csv: the most confident mistakes and the least confident correct
    answers, as thumbnails of the samples the model saw (before normalisation); with `maps`, the first few of
    each also as a Grad-CAM overlay for the class the model gave them."""
    names = [n for n in GALLERY_SPLITS if n in split_names] or list(split_names)[:1]
    found = []
    for name in names:
        path = run_dir / f"predictions_{name}.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for index, row in enumerate(rows):
            row["index"], row["confidence"] = index, float(row.get(f"p_{row['predicted']}", "nan"))
        wrong = sorted((r for r in rows if r["correct"] == "0"), key=lambda r: -r["confidence"])[:GALLERY_SIZE]
        right = sorted((r for r in rows if r["correct"] == "1"), key=lambda r: r["confidence"])[:GALLERY_SIZE]
        split = samples(name)
        found.append({"split": name, "total": len(rows), "wrong_total": sum(r["correct"] == "0" for r in rows),
                      "mistakes": [_thumb(r, split, maps if n < PER_GALLERY else None) for n, r in enumerate(wrong)],
                      "unsure": [_thumb(r, split, maps if n < PER_GALLERY else None) for n, r in enumerate(right)],
                      "method": maps.method if maps else None})
    return found


def _thumb(row: dict[str, Any], split: SplitArrays | None, maps: GalleryMaps | None = None) -> dict[str, Any]:
    index = row["index"]
    ok = split is not None and index < len(split.keys) and split.keys[index] == row["key"]
    overlay = None
    if ok and maps is not None:
        title = f"{row['key']}: {row['predicted']} {row['confidence']:.0%} (true: {row['label']})"
        path = maps(split.images[index], row["predicted"], title, row["key"])
        overlay = png_file_uri(path) if path is not None else None
    return {"uri": array_thumbnail(split.images[index]) if ok else None, "key": row["key"], "label": row["label"],
            "predicted": row["predicted"], "confidence": row["confidence"], "overlay": overlay}


def _class_counts(split: SplitArrays) -> Counter:
    return Counter(int(label) for label in np.asarray(split.labels))


def train_report(run_dir: Path, cfg: DictConfig, splits: Any, maps: GalleryMaps | None = None) -> Path | None:
    """report.html of a training run; `splits` is the run's DataSplits (thumbnails and sample counts); `maps`
    draws Grad-CAM for a few gallery samples."""
    def build() -> dict[str, Any]:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        names = ["train", "val", "test", *splits.extra_tests]
        checkpoint = run_dir / "checkpoints" / "best.safetensors"
        panels = split_panels(run_dir, metrics, splits.classes)
        return {"title": f"Training run: {cfg.get('recipe_name') or 'no recipe'}", "kind": "train",
                "run": run_section(run_dir, "train", cfg),
                "data": data_section(run_dir, {n: _class_counts(splits.split(n)) for n in names}, splits.classes),
                "curves": curves_section(run_dir), "best_epoch": metrics.get("best_epoch"),
                "monitor": metrics.get("monitor"), "splits": panels,
                "galleries": galleries(run_dir, [p["name"] for p in panels], lambda n: _split_or_none(splits, n),
                                       maps),
                "card": card_section(read_card(checkpoint) if checkpoint.is_file() else None)}

    return write_report(run_dir, "train.html.j2", build)


def _split_or_none(splits: Any, name: str) -> SplitArrays | None:
    try:
        return splits.split(name)
    except Exception:  # noqa: BLE001 -- an unknown split has no thumbnails
        return None


def eval_report(run_dir: Path, cfg: DictConfig, card: ModelCard, samples: dict[str, SplitArrays],
                maps: GalleryMaps | None = None) -> Path | None:
    """report.html of `medzoo eval`: the evaluated split(s) with the checkpoint's card; `samples` holds the
    evaluated splits' arrays (thumbnails); `maps` draws Grad-CAM for a few gallery samples."""
    def build() -> dict[str, Any]:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        panels = split_panels(run_dir, metrics, card.classes)
        return {"title": f"Evaluation: {Path(str(cfg.ckpt)).name}", "kind": "eval",
                "run": run_section(run_dir, "eval", cfg),
                "data": data_section(run_dir, {n: _class_counts(s) for n, s in samples.items()}, card.classes,
                                     [("checkpoint", str(cfg.ckpt)), ("split", cfg.split)]),
                "curves": None, "best_epoch": None, "monitor": None, "splits": panels,
                "galleries": galleries(run_dir, [p["name"] for p in panels], samples.get, maps),
                "card": card_section(card)}

    return write_report(run_dir, "eval.html.j2", build)


# --- predict -------------------------------------------------------------------------------------------
def predict_report(run_dir: Path, cfg: DictConfig, card: ModelCard, rows: Sequence[dict[str, Any]],
                   skipped: Sequence[dict[str, str]], items: Sequence[tuple[str, Any]]) -> Path | None:
    """report.html of `medzoo predict`: counts per predicted class, the least confident predictions with their
    inputs (and Grad-CAM overlays when the run made them), skipped files, the card. `items` are the
    (name, model input) pairs in the order of `rows`."""
    def build() -> dict[str, Any]:
        classes = list(card.classes)
        counts = Counter(row["prediction"] for row in rows)
        order = sorted(range(len(rows)), key=lambda i: max(rows[i]["probabilities"].values()))[:PREDICT_SHOWN]
        shown = []
        for i in order:
            row = rows[i]
            tensor = items[i][1] if i < len(items) and items[i][0] == row["path"] else None
            overlay = row.get("gradcam")
            shown.append({"path": row["path"], "prediction": row["prediction"],
                          "confidence": max(row["probabilities"].values()),
                          "probabilities": [row["probabilities"].get(c) for c in classes],
                          "uri": array_thumbnail(np.asarray(tensor)) if tensor is not None else None,
                          "gradcam": png_file_uri(Path(overlay)) if overlay else None})
        return {"title": f"Predictions: {Path(str(cfg.ckpt)).name}", "kind": "predict",
                "run": run_section(run_dir, "predict", cfg), "classes": classes, "total": len(rows),
                "counts": [{"name": c, "count": counts.get(c, 0), "share": counts.get(c, 0) / len(rows) if rows
                            else None} for c in classes],
                "rows": shown, "any_gradcam": any(r["gradcam"] for r in shown),
                "skipped": [(s["path"], s["error"]) for s in skipped[:MAX_LISTED]], "skipped_total": len(skipped),
                "card": card_section(card)}

    return write_report(run_dir, "predict.html.j2", build)
