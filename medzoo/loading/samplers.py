"""Seeded sampling: every order and every sample's augmentation seed follow from (seed, epoch, index)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


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
    """A SeededSampler whose epoch draws `len(strata)` indices with replacement; same (seed, epoch) -> same draw.

    `strata` holds one stratum per sample (e.g. a source x class cell): every stratum is equally likely and
    samples within a stratum are drawn uniformly. With one row of keys per sample (shape (n, levels)) the balance
    is nested: every value of the first key equally likely, then within it every value of the second key, and so
    on (class, then source within the class: `stratum_weights`).
    """

    def __init__(self, strata: np.ndarray, seed: int, rank: int = 0, world_size: int = 1, even: bool = True):
        super().__init__(len(strata), True, seed, rank, world_size, even)
        self.weights = torch.as_tensor(stratum_weights(strata), dtype=torch.float64)

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        return order[: self._usable()][self.rank :: self.world_size].tolist()


def stratum_weights(strata: np.ndarray) -> np.ndarray:
    """Each sample's draw probability under nested balance (see `BalancedSampler`); they sum to 1."""
    keys = np.asarray(strata)
    keys = keys.reshape(len(keys), -1)
    weights = np.ones(len(keys))
    parent = np.zeros(len(keys), dtype=np.int64)
    for level in range(keys.shape[1]):
        _, cell = np.unique(np.column_stack([parent, keys[:, level]]), axis=0, return_inverse=True)
        cell = cell.ravel()
        # children per parent: the distinct cells under each parent share its weight equally
        cell_parent = np.zeros(cell.max() + 1, dtype=np.int64)
        cell_parent[cell] = parent
        weights /= np.bincount(cell_parent)[parent]
        parent = cell
    return weights / np.bincount(parent)[parent]
