"""How sure a figure is: bootstrap confidence intervals and calibration (expected calibration error)."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(probs: np.ndarray, labels: np.ndarray, resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> dict[str, list[float]]:
    """Percentile bootstrap intervals for accuracy and balanced accuracy (test samples resampled with replacement)."""
    preds = np.asarray(probs).argmax(axis=1)
    labels = np.asarray(labels)
    correct = preds == labels
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(resamples, len(labels)))
    accuracy = correct[draws].mean(axis=1)
    classes = np.unique(labels)
    # balanced accuracy per resample: mean over classes of recall; a class absent from a resample is skipped
    hits = np.stack([np.where(labels[draws] == c, correct[draws], 0).sum(axis=1) for c in classes])
    totals = np.stack([(labels[draws] == c).sum(axis=1) for c in classes])
    with np.errstate(invalid="ignore", divide="ignore"):
        balanced = np.nanmean(np.where(totals > 0, hits / totals, np.nan), axis=0)
    tail = (1 - level) / 2 * 100
    return {name: [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
            for name, values in (("accuracy", accuracy), ("balanced_accuracy", balanced))}


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict:
    """Expected calibration error of the top-class confidence, with the per-bin table for a reliability plot."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence, preds = probs.max(axis=1), probs.argmax(axis=1)
    correct = (preds == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        if not mask.any():
            continue
        acc, conf, share = float(correct[mask].mean()), float(confidence[mask].mean()), float(mask.mean())
        ece += share * abs(acc - conf)
        table.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": int(mask.sum()),
                      "accuracy": acc, "confidence": conf})
    return {"ece": float(ece), "bins": table}
