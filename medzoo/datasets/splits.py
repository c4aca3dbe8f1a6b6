"""Seeded, stratified validation splits."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from medzoo.datasets.arrays import DecodeReport, SplitArrays
from medzoo.errors import ConfigError, DataError


def subset(split: SplitArrays, indices: np.ndarray) -> SplitArrays:
    """The samples of `split` at `indices`, in that order."""
    indices = np.sort(indices)
    return SplitArrays(split.images[indices], split.labels[indices], [split.keys[i] for i in indices],
                       DecodeReport())


def stratified_split(split: SplitArrays, val_fraction: float, seed: int,
                     groups: Mapping[str, int] | None = None,
                     setting: str = "data.val_fraction") -> tuple[SplitArrays, SplitArrays]:
    """Carve a class-stratified validation set of `val_fraction` from `split`, reproducibly for `seed`.

    With `groups` (key -> duplicate-group id), members of one group never straddle train and val, so a
    near-copy of a validation image cannot sit in training and flatter the validation score. `setting`
    names the fraction in errors.
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"{setting} must be between 0 and 1, not {val_fraction}")
    count = len(split.labels)
    if count == 0:
        raise DataError(f"no samples to carve {setting}={val_fraction} from; check that the data holds images "
                        "(data.root, data.path) and that they were read.")
    labels, members = np.unique(split.labels, return_counts=True)
    if members.min() < 2:
        lonely = [int(label) for label in labels[members < 2]]
        raise DataError(f"class(es) {lonely} (by index) hold a single sample; a stratified split ({setting}) needs "
                        "at least 2 per class: add samples or leave the class out.")
    classes = len(labels)
    carved = math.ceil(val_fraction * count)
    if min(carved, count - carved) < classes:
        raise DataError(f"{setting}={val_fraction} of {count} samples leaves {carved} and {count - carved}, "
                        f"fewer than the {classes} classes that each side needs; change {setting} or add samples.")
    indices = np.arange(count)
    if not groups:
        train_idx, val_idx = train_test_split(indices, test_size=val_fraction, random_state=seed,
                                              stratify=split.labels)
        return subset(split, train_idx), subset(split, val_idx)
    # files outside every duplicate group form groups of one
    ids = np.array([groups.get(key, -1 - i) for i, key in enumerate(split.keys)])
    folds = StratifiedGroupKFold(n_splits=max(2, round(1 / val_fraction)), shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(indices, split.labels, ids))
    return subset(split, train_idx), subset(split, val_idx)


def keep_keys(split: SplitArrays, keys: set[str]) -> SplitArrays:
    """The samples of `split` whose key is in `keys`."""
    return subset(split, np.array([i for i, key in enumerate(split.keys) if key in keys], dtype=np.int64))
