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

from medzoo.datasets.cache import CachedSplit
from medzoo.datasets.dataset import DataSplits
from medzoo.datasets.prepared import PreparedDataset
from medzoo.datasets.splits import stratified_split
from medzoo.errors import ConfigError, DataError


class MappedSamples:
    """The samples of a prepared cache as a read-only N x C x ... array-like, each item read when used.

    Indexing with an integer gives one sample (a memory map, or its `pre` result); with an array or a slice
    it gives another `MappedSamples`; `np.asarray` stacks them all (what a device cache asks for).
    """

    def __init__(self, cache: PreparedDataset, indices: np.ndarray,
                 preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
                 sample: tuple[tuple[int, ...], np.dtype] | None = None):
        self.cache, self.indices, self.preprocess = cache, np.asarray(indices, np.int64), preprocess
        if sample is None:
            sample = self._sample_form()
        self.sample_shape, self.dtype = sample

    def _sample_form(self) -> tuple[tuple[int, ...], np.dtype]:
        if self.preprocess is not None and len(self.indices):  # `pre` may change the shape: run it once
            first = self[0]
            return tuple(first.shape), first.dtype
        forms = {(tuple(self.cache.samples[i]["shape"]), self.cache.samples[i]["dtype"]) for i in self.indices}
        if len(forms) > 1:
            listed = "; ".join(f"{list(shape)} {dtype}" for shape, dtype in sorted(forms)[:4])
            raise DataError(f"{self.cache.root}: the prepared samples differ in shape or dtype ({listed}), and a "
                            "batch needs one. Prepare them again with one size (data.layout=slices "
                            "data.channels=N for stacks), or add a `pre` step that fixes it (e.g. "
                            "transforms=volume_3d's ResizeWithPadOrCrop).")
        shape, dtype = forms.pop() if forms else ((), "uint8")
        return shape, np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.indices), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int | slice | np.ndarray) -> np.ndarray | MappedSamples:
        if isinstance(item, (int, np.integer)):
            image = self.cache.array(int(self.indices[item]))
            return image if self.preprocess is None else self.preprocess(image)
        return MappedSamples(self.cache, self.indices[item], self.preprocess, (self.sample_shape, self.dtype))

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.shape, dtype or self.dtype)
        for position in range(len(self)):
            out[position] = self[position]
        return out


def _split(cache: PreparedDataset, preprocess: Callable[[np.ndarray], np.ndarray] | None) -> CachedSplit:
    indices = np.arange(len(cache))
    return CachedSplit(MappedSamples(cache, indices, preprocess), cache.labels.copy(), list(cache.keys))


def _fingerprint(*caches: PreparedDataset) -> str:
    """The caches' samples by key, label and their sources' sha256 (recorded by `prepare`)."""
    digest = hashlib.sha256()
    for cache in caches:
        for entry in cache.samples:
            digest.update(f"{entry['key']}|{entry['label']}|{entry.get('source_sha256', '')}\n".encode())
    return "prepared-sha256:" + digest.hexdigest()


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
        cache = PreparedDataset(self.path, verify=self.verify)
        caches = [cache]
        if self.test_path:
            test_cache = PreparedDataset(Path(self.test_path).expanduser(), verify=self.verify)
            if test_cache.classes != cache.classes:
                raise DataError(f"{test_cache.root}: classes {test_cache.classes} differ from {cache.root}'s "
                                f"{cache.classes}; prepare both with the same classes (prepare classes=[...]).")
            rest, test = _split(cache, preprocess), _split(test_cache, preprocess)
            caches.append(test_cache)
        else:
            rest, test = stratified_split(_split(cache, preprocess), self.test_fraction, self.split_seed,
                                          setting="data.test_fraction")
        train, val = stratified_split(rest, self.val_fraction, self.split_seed)
        if train.images.shape[1:] != test.images.shape[1:]:
            raise DataError(f"{test.images.cache.root}: test samples of shape {list(test.images.shape[1:])}, "
                            f"training samples {list(train.images.shape[1:])}; prepare both the same way.")
        report = {"source": str(cache.root), "test_source": str(caches[-1].root),
                  "prepared_settings": cache.manifest.get("settings") or {},  # checked: an object or null
                  "skipped_when_prepared": sum(len(c.manifest.get("skipped") or []) for c in caches),
                  "pre_on_every_read": has_pre}
        return DataSplits(train, val, test, classes=list(cache.classes), spatial_dims=cache.spatial_dims,
                          fingerprint=_fingerprint(*caches), report=report)
