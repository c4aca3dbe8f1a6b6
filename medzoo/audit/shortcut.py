"""Shortcut check: how well file metadata alone (size, mode, bytes) predicts the label, against the majority class."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from medzoo.audit.hashing import ImageFacts
from medzoo.audit.settings import AuditSettings

FEATURES = ("width", "height", "mode", "file_size")
BASELINE = "majority class"


def metadata_features(facts: list[ImageFacts]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (width, height, mode code, file size), labels and splits of the decoded files."""
    readable = [f for f in facts if f.readable]
    modes = sorted({f.mode for f in readable})
    features = np.array([[f.width, f.height, modes.index(f.mode), f.file_size] for f in readable], dtype=np.float64)
    return (features.reshape(-1, len(FEATURES)), np.array([f.label for f in readable], dtype=np.int64),
            np.array([f.split for f in readable]))


def models(seed: int) -> dict[str, tuple[Any, list[int]]]:
    """The trivial classifiers tried, each with the feature columns it sees."""
    every, size_only = list(range(len(FEATURES))), [0, 1]
    # Sizes and byte counts span orders of magnitude; logs keep the linear model from being dominated by bytes.
    logistic = make_pipeline(FunctionTransformer(np.log1p), StandardScaler(), LogisticRegression(max_iter=2000))
    tree = DecisionTreeClassifier(max_depth=6, min_samples_leaf=3, random_state=seed)
    return {BASELINE: (DummyClassifier(strategy="most_frequent"), every),
            "decision tree, all metadata": (tree, every),
            "logistic regression, all metadata": (logistic, every),
            "decision tree, width and height only": (clone(tree), size_only)}


def shortcut_check(facts: list[ImageFacts], train_split: str, test_split: str,
                   settings: AuditSettings) -> dict[str, Any]:
    """Cross-validated accuracy of each trivial classifier over all decoded files, and a train-split ->
    test-split score; `shortcut` is true when the best beats the baseline by `shortcut_margin`."""
    features, labels, splits = metadata_features(facts)
    smallest = min(Counter(labels.tolist()).values(), default=0)
    folds = min(settings.cv_folds, smallest)
    if len(set(labels.tolist())) < 2 or folds < 2:
        return {"skipped": f"needs two classes with at least two decoded files each (smallest class: {smallest})"}
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=settings.seed)
    scores = {}
    for name, (model, columns) in models(settings.seed).items():
        cv = cross_validate(model, features[:, columns], labels, cv=splitter,
                            scoring=("accuracy", "balanced_accuracy"))
        scores[name] = {"accuracy": round(float(cv["test_accuracy"].mean()), 4),
                        "balanced_accuracy": round(float(cv["test_balanced_accuracy"].mean()), 4)}
    baseline = scores[BASELINE]["accuracy"]
    best = max((name for name in scores if name != BASELINE), key=lambda name: scores[name]["accuracy"])
    result = {"features": list(FEATURES), "files": int(len(labels)), "folds": folds, "models": scores,
              "baseline_accuracy": baseline, "best_model": best, "best_accuracy": scores[best]["accuracy"],
              "lift": round(scores[best]["accuracy"] - baseline, 4),
              "shortcut": scores[best]["accuracy"] >= baseline + settings.shortcut_margin}
    train, test = splits == train_split, splits == test_split
    if train.any() and test.any():
        # Whether a size shortcut learned on the training split still holds on the test split (a domain shift
        # shows up as a drop here).
        model, columns = models(settings.seed)["decision tree, all metadata"]
        model.fit(features[train][:, columns], labels[train])
        predicted = model.predict(features[test][:, columns])
        result["train_to_test"] = {"accuracy": round(float(accuracy_score(labels[test], predicted)), 4),
                                   "balanced_accuracy": round(float(balanced_accuracy_score(labels[test],
                                                                                              predicted)), 4)}
    return result
