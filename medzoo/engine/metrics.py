"""Classification metrics from predicted probabilities, computed with scikit-learn."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, one-vs-rest ROC-AUC, per-class precision/recall and the
    confusion matrix (rows: true class, columns: predicted) for N x K probabilities."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    preds = probs.argmax(axis=1)
    indices = list(range(len(classes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        precision, recall, f1, support = precision_recall_fscore_support(
            labels, preds, labels=indices, zero_division=0)
        metrics = {
            "accuracy": float(accuracy_score(labels, preds)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, preds)),
            "macro_f1": float(f1_score(labels, preds, labels=indices, average="macro", zero_division=0)),
            "auc": _auc(probs, labels, indices),
            "num_samples": int(len(labels)),
        }
    metrics["per_class"] = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(classes)
    }
    metrics["confusion_matrix"] = confusion_matrix(labels, preds, labels=indices).tolist()
    return metrics


def _auc(probs: np.ndarray, labels: np.ndarray, indices: list[int]) -> float | None:
    """Macro one-vs-rest ROC-AUC; None when a class is absent (AUC is undefined then)."""
    if len(np.unique(labels)) < len(indices):
        return None
    if len(indices) == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=indices))
