"""A prepared cache (`medzoo prepare`) as a recipe's data: `medzoo train data=prepared data.path=CACHE`.

The samples stay where `prepare` wrote them, one memory-mapped `.npy` each, and are read when a batch needs
them: nothing is decoded again, and a set of 1000-channel stacks larger than memory trains as well as a small
one. Validation (and, without `data.test_path`, test) samples are carved from the cache, class-stratified
and seeded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.dataset import DataSplits
from medzoo.datasets.prepared_store import PreparedStore, rerun_hint
from medzoo.datasets.splits import stratified_split
from medzoo.errors import ConfigError, DataError


def _fingerprint(*caches: PreparedStore) -> str:
    """The caches' samples by key, label and their sources' sha256 (recorded by `prepare`)."""
    digest = hashlib.sha256()
    for cache in caches:
        for entry in cache.samples:
            digest.update(f"{entry['key']}|{entry['label']}|{entry.get('source_sha256', '')}\n".encode())
    return "prepared-sha256:" + digest.hexdigest()


def _open(path: Path, verify: str) -> PreparedStore:
    """The cache at `path`, refused when it holds no samples (nothing to train or test on)."""
    cache = PreparedStore(path, verify=verify)
    if not len(cache):
        skipped = len(cache.manifest.get("skipped") or [])
        why = f" ({skipped} unreadable source(s) skipped, listed in its manifest.json)" if skipped else ""
        raise DataError(f"{cache.root}: the prepared cache holds no samples{why}, nothing to train or test "
                        f"on. Run {rerun_hint(cache.manifest, cache.root)} again with readable sources.")
    return cache


def _alike(split: SplitArrays) -> SplitArrays:
    """`split`, once its samples are found to share one shape and dtype (batches need one; the DataError names
    the fix); the splits carved from it inherit the finding."""
    _ = split.images.sample_shape
    return split


class PreparedSource:
    """Train / val / test splits from one or two prepared caches.

    Args:
        path: the cache `medzoo prepare out=...` wrote (train, and val carved from it).
        test_path: a second cache for the test split; null carves `test_fraction` of `path` instead.
        val_fraction, test_fraction, split_seed: the class-stratified carving.
        verify: how the caches are checked on load: size (fast) or full (CRC-32 of every file).
    """

    def __init__(self, path: str | None, name: str = "prepared", test_path: str | None = None,
                 val_fraction: float = 0.15, test_fraction: float = 0.15, split_seed: int = 0,
                 verify: str = "size"):
        if not path:
            raise ConfigError("data=prepared needs data.path=CACHE, the folder `medzoo prepare out=CACHE` wrote.")
        self.path, self.test_path, self.name = Path(path).expanduser(), test_path, name
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.verify = verify

    def load(self, preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
             preprocess_spec: str = "") -> DataSplits:
        """The splits, samples left in the cache; `pre` steps (if any) run as each sample is read."""
        has_pre = bool(preprocess_spec and json.loads(preprocess_spec).get("pre"))
        preprocess = preprocess if has_pre else None
        cache = _open(self.path, self.verify)
        caches = [cache]
        if self.test_path:
            test_cache = _open(Path(self.test_path).expanduser(), self.verify)
            if test_cache.classes != cache.classes:
                raise DataError(f"{test_cache.root}: classes {test_cache.classes} differ from {cache.root}'s "
                                f"{cache.classes}; prepare both with the same classes (prepare classes=[...]).")
            rest, test = _alike(cache.split(preprocess)), _alike(test_cache.split(preprocess))
            caches.append(test_cache)
        else:
            rest, test = stratified_split(_alike(cache.split(preprocess)), self.test_fraction, self.split_seed,
                                          setting="data.test_fraction")
        train, val = stratified_split(rest, self.val_fraction, self.split_seed)
        if train.images.shape[1:] != test.images.shape[1:]:
            raise DataError(f"{test.images.store.root}: test samples of shape {list(test.images.shape[1:])}, "
                            f"training samples {list(train.images.shape[1:])}; prepare both the same way.")
        report = {"source": str(cache.root), "test_source": str(caches[-1].root),
                  "prepared_settings": cache.manifest.get("settings") or {},  # checked: an object or null
                  "skipped_when_prepared": sum(len(c.manifest.get("skipped") or []) for c in caches),
                  "pre_on_every_read": has_pre}
        return DataSplits(train, val, test, classes=list(cache.classes), spatial_dims=cache.spatial_dims,
                          fingerprint=_fingerprint(*caches), report=report)
