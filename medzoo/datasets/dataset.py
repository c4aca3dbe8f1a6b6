"""What every data source returns (`DataSplits`), and the array-backed torch Dataset.

Sampling and loaders live in `medzoo.loading`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from medzoo.datasets.arrays import SplitArrays
from medzoo.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DataSplits:
    """Train / val / test arrays of one dataset, its class names, and what loading reported."""

    train: SplitArrays
    val: SplitArrays
    test: SplitArrays
    classes: list[str]
    spatial_dims: int = 2
    fingerprint: str = ""
    report: dict = field(default_factory=dict)
    extra_tests: dict[str, SplitArrays] = field(default_factory=dict)  # e.g. test_deleaked
    # one stratum per training sample (e.g. source x class): batches drawn with every stratum equally likely
    train_strata: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in [name for name, split in self.extra_tests.items() if len(split.labels) == 0]:
            # e.g. every test image has an exact or near copy in training: no metric exists on no images
            log.warning("the test split '%s' holds no images; it is left out of the metrics", name)
            del self.extra_tests[name]

    @property
    def in_chans(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def input_size(self) -> list[int]:
        return list(self.train.images.shape[2:])

    def split(self, name: str) -> SplitArrays:
        if name in self.extra_tests:
            return self.extra_tests[name]
        if name not in ("train", "val", "test"):
            known = ", ".join(["train", "val", "test", *self.extra_tests])
            raise ConfigError(f"unknown split '{name}': use split= one of {known}")
        return getattr(self, name)


class ArrayDataset(Dataset):
    """The one torch Dataset: samples from C x H x W (or C x D x H x W) arrays through a per-sample transform;
    no decoding after the cache. The arrays are uint8 decoded images, MedMNIST arrays, or a prepared store's
    memory maps (`PreparedStore.split()`), which a transform must not write into.

    Items are an index or the engine's `(index, seed)` pairs (see `SeededSampler`); the transform is reseeded
    through `set_seed` when it has one. Without a transform a sample is float32, or, with `keep_dtype`, a copy
    as stored (for per-batch transforms on the device, which then get a quarter of float32's bytes from uint8).
    """

    def __init__(self, split: SplitArrays, transform: Callable[[np.ndarray], np.ndarray] | None,
                 keep_dtype: bool = False):
        self.split, self.transform, self.keep_dtype = split, transform, keep_dtype

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, image = self._source(item)
        if self.transform is not None:
            image = np.ascontiguousarray(self.transform(image))
            if not image.flags.writeable:  # a transform that handed back (a view of) a read-only memory map
                image = image.copy()
        else:
            # np.array copies into numpy's own allocation (transparent huge pages: several times faster to fault
            # in than a fresh torch.empty of 100+ MB); torch.from_numpy then shares it.
            image = np.array(image) if self.keep_dtype else np.array(image, dtype=np.float32)
        return torch.from_numpy(image), int(self.split.labels[index])

    def getitem_into(self, item: int | tuple[int, int], out: torch.Tensor) -> tuple[torch.Tensor, int]:
        """`self[item]`, its image built in `out` (a batch slot) where it fits (see `build_into`)."""
        index, image = self._source(item)
        dtype = None if self.transform is not None or self.keep_dtype else np.float32
        built = build_into(image, self.transform, out.numpy(), dtype)
        return (out if built is None else torch.from_numpy(built)), int(self.split.labels[index])

    def _source(self, item: int | tuple[int, int]) -> tuple[int, np.ndarray]:
        """(index, stored image) of `item`, the transform reseeded for it when it carries a seed."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None and hasattr(self.transform, "set_seed"):
            self.transform.set_seed(seed)
        return index, self.split.images[index]


def build_into(image: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None, out: np.ndarray,
               dtype: np.dtype | type | None = None) -> np.ndarray | None:
    """Make the sample `transform(image)` (or a copy of `image`), converted to `dtype` unless None, in `out`.

    Returns None when the sample was written into `out`: by a transform that takes `out=` (writing its first
    new array there, see `multichannel.Compose`), or copied in. A sample of another shape or dtype is
    returned as its own contiguous, writable array and `out` is left alone.
    """
    target = np.dtype(dtype) if dtype is not None else None
    if transform is None:
        result = image
    elif getattr(transform, "takes_out", False) and target in (None, out.dtype) and out.dtype == np.float32:
        result = transform(image, out=out)
        if result is out:
            return None
    else:
        result = transform(image)
    result = np.asarray(result)
    if result.shape == out.shape and (result.dtype if target is None else target) == out.dtype:
        np.copyto(out, result, casting="unsafe")  # the conversion astype would make
        return None
    result = np.ascontiguousarray(result, dtype=target)
    return result if result.flags.writeable and not np.shares_memory(result, image) else result.copy()
