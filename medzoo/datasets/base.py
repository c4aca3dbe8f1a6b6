"""What every data source returns, the array-backed torch Dataset, and seeded sampling."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medzoo.datasets import shm
from medzoo.datasets.batch_ring import RingDataLoader, ring_for
from medzoo.datasets.cache import CachedSplit
from medzoo.datasets.shm import resolve_workers
from medzoo.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DataSplits:
    """Train / val / test arrays of one dataset, its class names, and what loading reported."""

    train: CachedSplit
    val: CachedSplit
    test: CachedSplit
    classes: list[str]
    spatial_dims: int = 2
    fingerprint: str = ""
    report: dict = field(default_factory=dict)
    extra_tests: dict[str, CachedSplit] = field(default_factory=dict)  # e.g. test_deleaked
    # one stratum per training sample (e.g. source x class): batches drawn with every stratum equally likely
    train_strata: np.ndarray | None = None

    @property
    def in_chans(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def input_size(self) -> list[int]:
        return list(self.train.images.shape[2:])

    def split(self, name: str) -> CachedSplit:
        if name in self.extra_tests:
            return self.extra_tests[name]
        if name not in ("train", "val", "test"):
            known = ", ".join(["train", "val", "test", *self.extra_tests])
            raise ConfigError(f"unknown split '{name}': use split= one of {known}")
        return getattr(self, name)


class ArrayDataset(Dataset):
    """Samples from C x H x W (or C x D x H x W) arrays through a per-sample transform; no decoding after the
    cache. The arrays are uint8 decoded images, MedMNIST arrays, or a prepared cache's memory maps.

    Without a transform a sample is float32, or, with `keep_dtype`, a copy as stored (for per-batch
    transforms on the device, which then get a quarter of float32's bytes from uint8).
    """

    def __init__(self, split: CachedSplit, transform: Callable[[np.ndarray], np.ndarray] | None,
                 keep_dtype: bool = False):
        self.split, self.transform, self.keep_dtype = split, transform, keep_dtype

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, image = self._source(item)
        if self.transform is not None:
            image = self.transform(image)
        else:
            image = np.array(image) if self.keep_dtype else image.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(image)), int(self.split.labels[index])

    def getitem_into(self, item: int | tuple[int, int], out: torch.Tensor) -> tuple[torch.Tensor, int]:
        """`self[item]`, its image built in `out` (a batch slot) where it fits (see `build_into`)."""
        index, image = self._source(item)
        dtype = None if self.transform is not None or self.keep_dtype else np.float32
        built = build_into(image, self.transform, out.numpy(), dtype)
        return (out if built is None else torch.from_numpy(built)), int(self.split.labels[index])

    def _source(self, item: int | tuple[int, int]) -> tuple[int, np.ndarray]:
        """(index, stored image) of `item`, the transform reseeded for it when it carries a seed."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        if self.transform is not None and seed is not None:
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


class SeededSampler(Sampler):
    """Yields (index, seed): the order depends on (seed, epoch) and each sample's augmentation on
    (seed, epoch, index), so a resumed run sees exactly the batches an uninterrupted run would,
    whatever the number of loader workers.

    Under DDP each rank takes every `world_size`-th index of the same order, so the ranks' batch k together
    hold exactly the samples of batch k of a one-process run with `world_size` times the batch size. With
    `even=True` (training) the order is cut to a multiple of `world_size` so every rank takes as many steps.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 even: bool = False):
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0
        self.rank, self.world_size, self.even = rank, world_size, even

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _usable(self) -> int:
        return self.size - self.size % self.world_size if self.even else self.size

    def __len__(self) -> int:
        return len(range(self.rank, self._usable(), self.world_size))

    def indices(self) -> list[int]:
        """This rank's dataset indices for the current epoch, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        return order[: self._usable()][self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = (self.seed * 7_919 + self.epoch * 104_729) % 2**31
        for index in self.indices():
            yield index, (base + index * 2_654_435_761) % 2**32


class BalancedSampler(SeededSampler):
    """A SeededSampler whose epoch draws `len(strata)` indices with replacement, each stratum (e.g. a source x
    class cell) equally likely and samples within a stratum uniformly; same (seed, epoch) -> same draw."""

    def __init__(self, strata: np.ndarray, seed: int, rank: int = 0, world_size: int = 1, even: bool = True):
        super().__init__(len(strata), True, seed, rank, world_size, even)
        _, inverse, counts = np.unique(np.asarray(strata), return_inverse=True, return_counts=True)
        self.weights = torch.as_tensor(1.0 / (counts[inverse] * len(counts)), dtype=torch.float64)

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        return order[: self._usable()][self.rank :: self.world_size].tolist()


def sample_nbytes(sample: Any) -> int:
    """Bytes of the tensors and arrays in one sample (nested tuples, lists and dicts): what collate stacks."""
    if isinstance(sample, torch.Tensor):
        return sample.element_size() * sample.nelement()
    if isinstance(sample, np.ndarray):
        return int(sample.nbytes)
    if isinstance(sample, Mapping):
        return sum(sample_nbytes(value) for value in sample.values())
    if isinstance(sample, (tuple, list)):
        return sum(sample_nbytes(value) for value in sample)
    return 8  # a number becomes one int64/float64 element of the batch


def _first_sample(dataset: Dataset, seed: int) -> Any:
    """The first sample as the workers will return it (after its transform); None for no samples."""
    if len(dataset) == 0:
        return None
    return dataset[(0, seed)]  # the (index, seed) items that SeededSampler yields


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int | str,
                drop_last: bool = False, pin_memory: bool | None = None,
                device: str | torch.device | None = None, rank: int = 0, world_size: int = 1,
                sample_bytes: int | None = None, prefetch_factor: int | None = None,
                batch_ring: bool | str = "auto", strata: np.ndarray | None = None) -> DataLoader:
    """A DataLoader with a seeded (and, under DDP, rank-sharded) sampler and settings that fit the machine.

    Workers, pinned memory, prefetching and persistent workers come from `shm.loader_settings`: memory is
    pinned only when batches go to a CUDA device, and when the batches that the workers would queue in
    /dev/shm do not fit there, prefetch_factor and then num_workers are lowered (a warning names the
    numbers and the settings to change). Pinned batches let the trainer's `.to(device, non_blocking=True)`
    overlap the copy to the GPU with compute.

    Args:
        device: where the batches go; None takes CUDA when `pin_memory` is True (the older way to say it).
        pin_memory: False never pins; None or True pin when `device` is CUDA and CUDA is available.
        sample_bytes: bytes of one transformed sample; None measures the first sample, and only where
            workers will put batches in a /dev/shm that can be checked.
        prefetch_factor: batches in flight per worker; None chooses by batch size.
        batch_ring: "auto", True or False: where /dev/shm can be checked, workers write large unpinned batches
            into shared slots that are reused (`batch_ring.BatchRing`), not into a new segment each.
        strata: with shuffle, one stratum per sample: draw with every stratum equally likely (`BalancedSampler`).
    """
    workers = resolve_workers(num_workers)
    if device is None:
        device = "cuda" if pin_memory else "cpu"
    free = shm.shm_free_bytes() if workers > 0 else None
    # the first sample is read only where workers will put batches in a /dev/shm that can be checked
    first = _first_sample(dataset, seed) if free is not None and (sample_bytes is None or batch_ring is not False) \
        else None
    if sample_bytes is None:
        sample_bytes = sample_nbytes(first) if first is not None else 0
    settings = shm.loader_settings(sample_bytes, batch_size, workers, device, prefetch_factor)
    if pin_memory is False:
        settings["pin_memory"] = False
    log.debug("loader: batch %d, %d-byte samples, %s", batch_size, sample_bytes, settings)
    sampler = BalancedSampler(strata, seed, rank, world_size) if shuffle and strata is not None \
        else SeededSampler(len(dataset), shuffle, seed, rank, world_size, even=shuffle)
    ring = ring_for(batch_ring, first, batch_size, settings, free)
    if ring is not None:
        return RingDataLoader(dataset, ring=ring, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                              **settings)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **settings)
