"""Carving validation (and test) splits: data too small to split is one DataError naming the setting."""

from __future__ import annotations

import numpy as np
import pytest

from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.splits import stratified_split
from medzoo.errors import DataError


def arrays(labels: list[int]) -> SplitArrays:
    return SplitArrays(np.zeros((len(labels), 1, 4, 4), np.uint8), np.array(labels, np.int64),
                       [f"s{i}" for i in range(len(labels))])


def test_an_empty_split_is_one_error_naming_the_setting():
    with pytest.raises(DataError, match=r"no samples to carve data.val_fraction=0.3 from"):
        stratified_split(arrays([]), 0.3, 0)


def test_a_class_with_a_single_sample_is_named():
    with pytest.raises(DataError, match=r"class\(es\) \[2\] \(by index\) hold a single sample.*data.test_fraction"):
        stratified_split(arrays([0] * 5 + [1] * 4 + [2]), 0.3, 0, setting="data.test_fraction")


def test_a_split_that_fits_keeps_every_class_on_both_sides():
    train, val = stratified_split(arrays([0] * 6 + [1] * 6 + [2] * 2), 0.3, 0)
    assert set(train.labels.tolist()) == set(val.labels.tolist()) == {0, 1, 2}
    assert sorted(train.keys + val.keys) == sorted(f"s{i}" for i in range(14))
