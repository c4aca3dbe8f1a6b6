"""Bootstrap confidence intervals and calibration."""

from __future__ import annotations

import numpy as np
import pytest

from medzoo.engine.uncertainty import bootstrap_ci, calibration


def _probs_with_accuracy(n: int, accuracy: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    preds = np.where(rng.random(n) < accuracy, labels, (labels + 1) % 4)
    probs = np.full((n, 4), 0.1)
    probs[np.arange(n), preds] = 0.7
    return probs, labels


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_samples():
    cases = [_probs_with_accuracy(n, 0.8) for n in (100, 4000)]
    small, large = (bootstrap_ci(probs, labels) for probs, labels in cases)
    for (probs, labels), ci in zip(cases, (small, large)):
        observed = (probs.argmax(1) == labels).mean()
        low, high = ci["accuracy"]
        assert low < observed < high
    assert (large["accuracy"][1] - large["accuracy"][0]) < (small["accuracy"][1] - small["accuracy"][0]) / 3
    assert bootstrap_ci(*_probs_with_accuracy(100, 0.8)) == small  # seeded


def test_ece_of_a_hand_computed_case():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    result = calibration(probs, labels, bins=10)
    # bin (0.8, 0.9]: confidence 0.9, accuracy 0.5; bin (0.5, 0.6]: confidence 0.6, accuracy 1.0
    assert result["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert [b["count"] for b in result["bins"]] == [2, 2]


def test_calibrated_predictions_have_small_ece():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    labels = np.zeros(20000, dtype=int)
    correct = rng.random(20000) < confidence
    probs = np.stack([np.where(correct, confidence, 1 - confidence), np.where(correct, 1 - confidence, confidence)], 1)
    assert calibration(probs, labels)["ece"] < 0.02
    overconfident = np.stack([np.where(correct, 0.99, 0.01), np.where(correct, 0.01, 0.99)], 1)
    assert calibration(overconfident, labels)["ece"] > 0.2
