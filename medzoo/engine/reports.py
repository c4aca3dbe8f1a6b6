"""Run reports: metrics.json and PNG plots (training curves, confusion matrix)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on lab machines and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def write_json(path: Path, payload: dict) -> Path:
    """Write `payload` as indented JSON, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    tmp.replace(path)
    return path


def plot_curves(history: Sequence[dict[str, float]], path: Path) -> Path:
    """Loss and accuracy per epoch (train and validation), a marker on every epoch (a one-epoch run is a point)."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row["train/loss"] for row in history], marker="o", label="train")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    for key, label in (("train/accuracy", "train"), ("val/accuracy", "val"), ("val/balanced_accuracy", "val balanced")):
        if all(key in row for row in history):
            ax_acc.plot(epochs, [row[key] for row in history], marker="o", label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str) -> Path:
    """A confusion matrix with counts in each cell (rows: true class, columns: predicted)."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_reliability(bins: Sequence[dict], ece: float, path: Path, title: str) -> Path:
    """Reliability diagram: accuracy against confidence per bin, with the diagonal of perfect calibration."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    ax.bar(centres, [b["accuracy"] for b in bins], width=[b["upper"] - b["lower"] for b in bins],
           edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="black", ms=3)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{title} (ECE {ece:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_predictions(path: Path, keys: Sequence[str], probs: np.ndarray, labels: np.ndarray,
                      classes: Sequence[str]) -> Path:
    """One row per sample: its key (split/class/file for image folders), true and predicted class, whether they
    agree, and each class's probability, so that every wrong answer can be looked up and looked at."""
    predicted = probs.argmax(axis=1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "label", "predicted", "correct", *[f"p_{name}" for name in classes]])
        for key, label, guess, row in zip(keys, labels, predicted, probs, strict=True):
            writer.writerow([key, classes[label], classes[guess], int(label == guess), *[f"{p:.6f}" for p in row]])
    return path
