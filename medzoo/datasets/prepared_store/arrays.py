"""A prepared store opened for reading: checked against its manifest (`PreparedStore`), its samples served as
one array-like of memory-mapped `.npy` files (`MappedSamples`, what `SplitArrays.images` holds). The store has
no Dataset of its own: `ArrayDataset` serves its samples like any other split's."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.prepared_store.manifest import (
    MANIFEST,
    quote,
    read_manifest,
    rerun_hint,
)
from medzoo.datasets.prepared_store.sample_files import (
    LISTED,
    VERIFY,
    check_samples,
)
from medzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class PreparedStore:
    """A prepared store, checked against its manifest when opened (`verify`: size, or full CRC-32), and its
    samples by index as read-only memory maps (`array`), or all of them as one array-like (`split`)."""

    def __init__(self, root: str | Path, *, verify: str = "size"):
        if verify not in VERIFY:
            raise ConfigError(f"verify={verify!r} is not one of {', '.join(VERIFY)}.")
        self.root = Path(root).expanduser()
        path = self.root / MANIFEST
        if not path.is_file():
            raise DataError(f"no prepared cache at {self.root} ({MANIFEST} not found). Make one with "
                            f"`medzoo prepare inputs=DIR out={self.root}`.")
        self.manifest = read_manifest(self.root)
        hint = rerun_hint(self.manifest, self.root)
        if self.manifest.get("complete") is not True:
            raise DataError(f"{self.root}: the prepare run did not finish ({quote(self.manifest.get('pending'))} "
                            f"source(s) pending). Run {hint} again: it continues where it stopped.")
        problems = check_samples(self.root, self.manifest, verify)
        if problems:
            more = f"; and {len(problems) - LISTED} more" if len(problems) > LISTED else ""
            raise DataError(f"{self.root}: {len(problems)} prepared sample file(s) missing or damaged: "
                            f"{'; '.join(problems[:LISTED])}{more}. Run {hint} again: it re-reads only these "
                            "samples.")
        self.samples = self.manifest["samples"]
        self.classes: list[str] = list(self.manifest["classes"])
        self.labels = np.asarray([e["label"] for e in self.samples], dtype=np.int64)
        self.keys = [e["key"] for e in self.samples]
        skipped = self.manifest.get("skipped") or []
        if skipped:
            log.warning("%s: %d source(s) were skipped when the cache was prepared (listed in %s)", self.root,
                        len(skipped), path)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        """Channel count of the first sample (the cache does not force one; `in_chans=` does)."""
        return int(self.samples[0]["shape"][0]) if self.samples else 0

    @property
    def spatial_dims(self) -> int:
        return len(self.samples[0]["shape"]) - 1 if self.samples else 0

    def sample_bytes(self, index: int = 0) -> int:
        """Bytes of sample `index` as stored."""
        entry = self.samples[index]
        return int(np.prod(entry["shape"], dtype=np.int64)) * np.dtype(entry["dtype"]).itemsize

    def array(self, index: int) -> np.ndarray:
        """Sample `index` as a read-only memory map (nothing is read until it is used)."""
        file = self.root / self.samples[index]["file"]
        try:
            return np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{file}: cannot open the prepared sample ({exc}). Run "
                            f"{rerun_hint(self.manifest, self.root)} again to repair it.") from exc

    def split(self, preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
              indices: np.ndarray | None = None) -> SplitArrays:
        """The store's samples (or those at `indices`) as a split: read when used, `preprocess` (the `pre`
        steps) run on each read."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        return SplitArrays(MappedSamples(self, indices, preprocess), self.labels[indices].copy(),
                           [self.keys[i] for i in indices])


class MappedSamples:
    """The samples of a prepared cache as a read-only N x C x ... array-like, each item read when used.

    Indexing with an integer gives one sample (a memory map, or its `pre` result); with an array or a slice
    it gives another `MappedSamples`; `np.asarray` stacks them all (what a device cache asks for). `shape` and
    `dtype` need every sample alike (a DataError names the fix otherwise); one sample at a time need not.
    """

    def __init__(self, store: PreparedStore, indices: np.ndarray,
                 preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
                 sample: tuple[tuple[int, ...], np.dtype] | None = None):
        self.store, self.indices, self.preprocess = store, np.asarray(indices, np.int64), preprocess
        self._form = sample  # found when first asked: a sample at a time, shapes may differ; a batch needs one

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self._form is None:
            self._form = self._sample_form()
        return self._form[0]

    @property
    def dtype(self) -> np.dtype:
        if self._form is None:
            self._form = self._sample_form()
        return self._form[1]

    def _sample_form(self) -> tuple[tuple[int, ...], np.dtype]:
        if self.preprocess is not None and len(self.indices):  # `pre` may change the shape: run it once
            first = self[0]
            return tuple(first.shape), first.dtype
        forms = {(tuple(self.store.samples[i]["shape"]), self.store.samples[i]["dtype"]) for i in self.indices}
        if len(forms) > 1:
            listed = "; ".join(f"{list(shape)} {dtype}" for shape, dtype in sorted(forms)[:4])
            raise DataError(f"{self.store.root}: the prepared samples differ in shape or dtype ({listed}), and a "
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
            image = self.store.array(int(self.indices[item]))
            return image if self.preprocess is None else self.preprocess(image)
        return MappedSamples(self.store, self.indices[item], self.preprocess, self._form)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.shape, dtype or self.dtype)
        for position in range(len(self)):
            out[position] = self[position]
        return out
