"""What every data source returns, the array-backed torch Dataset, and seeded sampling."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medzoo.datasets.cache import CachedSplit


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
            raise ValueError(f"unknown split '{name}': use split= one of {known}")
        return getattr(self, name)


class ArrayDataset(Dataset):
    """Samples from uint8 C x H x W arrays through a per-sample transform; no decoding after the cache."""

    def __init__(self, split: CachedSplit, transform: Callable[[np.ndarray], np.ndarray] | None):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        image = self.split.images[index]
        if self.transform is not None:
            if seed is not None:
                self.transform.set_seed(seed)
            image = self.transform(image)
        else:
            image = image.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(image)), int(self.split.labels[index])


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


def resolve_workers(num_workers: int | str) -> int:
    """`auto`: leave one core to the training process, at most 8 workers."""
    if num_workers == "auto":
        return max(0, min(8, (os.cpu_count() or 1) - 1))
    return int(num_workers)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int | str,
                drop_last: bool = False, pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader with a seeded (and, under DDP, rank-sharded) sampler and sensible worker settings."""
    workers = resolve_workers(num_workers)
    sampler = SeededSampler(len(dataset), shuffle, seed, rank, world_size, even=shuffle)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                      num_workers=workers, pin_memory=pin_memory, drop_last=drop_last,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)
