"""A prepared cache as a torch Dataset: samples served from memory-mapped `.npy` files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medzoo.datasets.dataset import build_into
from medzoo.datasets.prepared.manifest import (
    MANIFEST,
    quote,
    read_manifest,
    rerun_hint,
)
from medzoo.datasets.prepared.store import (
    LISTED,
    VERIFY,
    check_samples,
)
from medzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class PreparedDataset(Dataset):
    """A prepared cache as a torch Dataset of `(tensor, label)`, read from memory-mapped `.npy` files.

    Items are an index or the engine's `(index, seed)` pairs (see `SeededSampler`); `transform` gets the
    read-only memory map (it must not write into it) and is reseeded through `set_seed` when it has one.
    Without a transform the sample keeps its stored dtype unless `dtype` is given.
    """

    def __init__(self, root: str | Path, *, verify: str = "size",
                 transform: Callable[[np.ndarray], Any] | None = None, dtype: str | None = None):
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
        self.transform, self.dtype = transform, None if dtype is None else np.dtype(dtype)
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
        """Bytes of sample `index` as this dataset returns it without a transform."""
        entry = self.samples[index]
        itemsize = (self.dtype or np.dtype(entry["dtype"])).itemsize
        return int(np.prod(entry["shape"], dtype=np.int64)) * itemsize

    def array(self, index: int) -> np.ndarray:
        """Sample `index` as a read-only memory map (nothing is read until it is used)."""
        file = self.root / self.samples[index]["file"]
        try:
            return np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{file}: cannot open the prepared sample ({exc}). Run "
                            f"{rerun_hint(self.manifest, self.root)} again to repair it.") from exc

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, image = self._source(item)
        if self.transform is None:
            # np.array copies into numpy's own allocation (transparent huge pages: several times faster to
            # fault in than a fresh torch.empty of 100+ MB); torch.from_numpy then shares it.
            return torch.from_numpy(np.array(image, dtype=self.dtype)), int(self.labels[index])
        out = np.ascontiguousarray(self.transform(image), dtype=self.dtype)
        if not out.flags.writeable:  # a transform that handed back (a view of) the read-only memory map
            out = out.copy()
        return torch.from_numpy(out), int(self.labels[index])

    def getitem_into(self, item: int | tuple[int, int], out: torch.Tensor) -> tuple[torch.Tensor, int]:
        """`self[item]`, its image built in `out` (a batch slot) where it has that shape and dtype.

        The sample is made in place where it can be: copied straight from the memory map, or written by a
        transform that takes an `out` buffer (`multichannel.Compose`); see `build_into`.
        """
        index, image = self._source(item)
        built = build_into(image, self.transform, out.numpy(), self.dtype)
        return (out if built is None else torch.from_numpy(built)), int(self.labels[index])

    def _source(self, item: int | tuple[int, int]) -> tuple[int, np.ndarray]:
        """(index, memory-mapped image) of `item`, the transform reseeded for it when it carries a seed."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None and self.transform is not None and hasattr(self.transform, "set_seed"):
            self.transform.set_seed(seed)
        return index, self.array(index)
