"""`make_loader`: a DataLoader with a seeded sampler and settings that fit the machine."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medzoo.loading import shared_memory as shm
from medzoo.loading.batch_ring import RingDataLoader, ring_for
from medzoo.loading.samplers import BalancedSampler, SeededSampler
from medzoo.loading.shared_memory import resolve_workers

log = logging.getLogger(__name__)


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
        strata: with shuffle, one stratum per sample (or one row of nested keys): draw with every stratum equally
            likely (`BalancedSampler`).
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
