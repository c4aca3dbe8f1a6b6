"""Seeded, stratified validation splits."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from medzoo.datasets.cache import CachedSplit, DecodeReport


def subset(split: CachedSplit, indices: np.ndarray) -> CachedSplit:
    """The samples of `split` at `indices`, in that order."""
    indices = np.sort(indices)
    return CachedSplit(split.images[indices], split.labels[indices], [split.keys[i] for i in indices],
                       DecodeReport())


def stratified_split(split: CachedSplit, val_fraction: float, seed: int) -> tuple[CachedSplit, CachedSplit]:
    """Carve a class-stratified validation set of `val_fraction` from `split`, reproducibly for `seed`."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"data.val_fraction must be between 0 and 1, not {val_fraction}")
    indices = np.arange(len(split.labels))
    train_idx, val_idx = train_test_split(indices, test_size=val_fraction, random_state=seed,
                                          stratify=split.labels)
    return subset(split, train_idx), subset(split, val_idx)
