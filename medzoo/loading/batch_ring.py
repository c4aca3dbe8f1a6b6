"""Worker batches written into reused shared-memory slots, not into a new /dev/shm segment per batch.

A DataLoader worker normally collates each batch into a fresh shared-memory segment. The kernel zeroes its
pages as the worker first writes them, the training process maps the segment again, and the pages are freed
when the batch is dropped. For large slice stacks that is much of what a sample costs: bench/loader.py
measures a 262 MB float32 sample stacked into a new segment at 5-7 samples/s, and into a slot written before
at 53-68.

`BatchRing` allocates `workers x (prefetch_factor + 1)` batch slots once, before the workers start. Each
worker writes its batches into its own slots in turn and sends only the slot number; the training process
reads the slot through the mapping it already holds. Labels and other fields are collated as usual.

A dataset with a `getitem_into(item, out)` method (`ArrayDataset`) builds each sample straight in its
row of the slot: its transforms write their first new result there, so a sample costs neither a fresh
262 MB allocation (its page faults are much of a sample's time, several times more after a pause on a
virtual machine that hands freed memory back to its host) nor the copy into the batch.

A batch from the ring is a view of its slot. It stays valid while the loop takes up to `num_workers - 1`
more batches, and it is overwritten from the `num_workers`-th on (with one worker: from the next batch) or
when a new epoch follows an unfinished one. The trainer is done with every batch before it takes the next;
code that keeps one longer should `.clone()` it. A batch whose images do not fit the slots (another shape or
dtype) takes the usual path.

Why the slots are never written while they are read: the DataLoader hands tasks to its workers in turn and
sends a new one only as it yields a batch, so worker w's task j + prefetch_factor + 1 (which reuses the slot
of its task j) is sent when the loop takes worker w's batch j + 1, `num_workers` batches after batch j.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from medzoo.errors import ConfigError
from medzoo.loading import shared_memory as shm

log = logging.getLogger(__name__)

# Slots per worker beyond its prefetch_factor: the one the training loop is reading.
SPARE_SLOTS = 1
# A ring holds its memory for the loader's whole life (the usual path frees each batch): at most this share
# of the machine's memory.
RAM_FRACTION = 0.25


def _memory_bytes() -> int | None:
    """The machine's physical memory, None where the platform does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(count: int | None) -> str:
    return "an unknown amount" if count is None else f"{count / 1e9:.2f} GB"


def ring_bytes(batch_bytes: int, workers: int, prefetch_factor: int) -> int:
    """Shared memory a ring holds for the loader's lifetime."""
    return workers * (prefetch_factor + SPARE_SLOTS) * batch_bytes


class FilledSamples(list):
    """One batch's samples, fetched by a worker with their images built in rows of ring slot `slot`."""

    def __init__(self, samples: list, slot: int):
        super().__init__(samples)
        self.slot = slot


@dataclass(frozen=True)
class SlotBatch:
    """What a worker sends for a batch written into the ring: the slot, the batch length, other fields."""

    slot: int
    size: int
    rest: list


class BatchRing:
    """Shared batch slots for one loader, and the collate function that fills them in the workers.

    Args:
        image: one sample's image tensor (the first field of each sample) as the workers return it.
        batch_size, workers, prefetch_factor: the loader's.
    """

    def __init__(self, image: torch.Tensor, batch_size: int, workers: int, prefetch_factor: int):
        if workers < 1:
            raise ValueError("a batch ring needs loader workers (num_workers >= 1)")
        self.per_worker = int(prefetch_factor) + SPARE_SLOTS
        self.sample_shape, self.dtype = tuple(image.shape), image.dtype
        shape = (workers * self.per_worker, int(batch_size), *self.sample_shape)
        storage = torch.UntypedStorage._new_shared(math.prod(shape) * image.element_size())
        self.slots = torch.empty(0, dtype=self.dtype).set_(storage, 0, shape)
        # Fault every page in now, once: the workers then write into pages that exist (a cheap mapping fault
        # each the first time) instead of each fresh page being allocated and zeroed in a worker's batch.
        started = time.perf_counter()
        self.slots.zero_()
        self.setup_seconds = time.perf_counter() - started
        self._turn = 0  # counted in each worker process separately (each has its own copy of the ring)

    @property
    def nbytes(self) -> int:
        return self.slots.nelement() * self.slots.element_size()

    def _fits(self, images: Sequence[Any]) -> bool:
        return len(images) <= self.slots.shape[1] and all(
            isinstance(image, torch.Tensor) and image.dtype == self.dtype
            and tuple(image.shape) == self.sample_shape for image in images)

    def claim(self, worker: int) -> int:
        """In a worker: the slot for its next batch (its own slots in turn)."""
        slot = worker * self.per_worker + self._turn % self.per_worker
        self._turn += 1
        return slot

    def fetch(self, dataset: Any, items: Sequence[Any]) -> list:
        """In a worker: the samples of one batch, built in the rows of a claimed slot where the dataset can."""
        worker = get_worker_info()
        if worker is None or len(items) > self.slots.shape[1]:
            return [dataset[item] for item in items]
        slot = self.claim(worker.id)
        return FilledSamples([dataset.getitem_into(item, row) for item, row in zip(items, self.slots[slot])], slot)

    def collate(self, samples: list) -> Any:
        """In a worker: the images stacked into this worker's next slot; elsewhere `default_collate`."""
        worker = get_worker_info()
        if worker is None or not all(isinstance(s, (tuple, list)) and s for s in samples):
            return default_collate(samples)
        images = [sample[0] for sample in samples]
        if not self._fits(images):
            return default_collate(samples)
        slot = samples.slot if isinstance(samples, FilledSamples) else self.claim(worker.id)
        rows = self.slots[slot, : len(images)]
        for row, image in zip(rows, images):
            if image.data_ptr() != row.data_ptr():  # not built in place
                row.copy_(image)
        return SlotBatch(slot, len(images), default_collate([tuple(sample[1:]) for sample in samples]))

    def resolve(self, batch: Any) -> Any:
        """In the training process: a `SlotBatch` as [images, *fields], the images a view of the slot."""
        if isinstance(batch, SlotBatch):
            return [self.slots[batch.slot, : batch.size], *batch.rest]
        return batch


class SlotFilling(Dataset):
    """A dataset as a `RingDataLoader` hands it to its workers: whole batches are fetched through the ring,
    so that a dataset with `getitem_into` builds its samples in the slot. Everything else is the dataset's."""

    def __init__(self, dataset: Any, ring: BatchRing):
        self.dataset, self.ring = dataset, ring

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Any) -> Any:
        return self.dataset[item]

    def __getitems__(self, items: Sequence[Any]) -> list:
        return self.ring.fetch(self.dataset, items)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("dataset", "ring"):  # unpickling looks these up before __init__
            raise AttributeError(name)
        return getattr(self.dataset, name)


class RingDataLoader(DataLoader):
    """A DataLoader whose workers hand over each batch's images through a `BatchRing`."""

    def __init__(self, dataset, *, ring: BatchRing, **kwargs):
        if kwargs.get("pin_memory"):
            raise ValueError("a batch ring is for unpinned batches: the pin-memory thread copies them anyway")
        if not kwargs.get("persistent_workers"):
            raise ValueError("a batch ring needs persistent workers: each worker counts its own slots")
        if hasattr(dataset, "getitem_into"):
            dataset = SlotFilling(dataset, ring)
        super().__init__(dataset, collate_fn=ring.collate, **kwargs)
        self.ring = ring

    def __iter__(self) -> Iterator[Any]:
        return map(self.ring.resolve, super().__iter__())


def ring_for(mode: bool | str, first: Any, batch_size: int, settings: dict,
             free_bytes: int | None) -> BatchRing | None:
    """The ring a loader with these settings should use, or None for the usual path.

    Args:
        mode: "auto" (for batches of at least `shm.SMALL_BATCH_BYTES` whose ring fits), True (any size that
            fits) or False. A ring fits when it takes at most `shm.SHM_FRACTION` of the free /dev/shm and
            `RAM_FRACTION` of the machine's memory.
        first: the dataset's first sample, as the workers return it; its first field must be a tensor.
        settings: the loader's keyword arguments from `shm.loader_settings`.
        free_bytes: free bytes of /dev/shm, None where it cannot be checked.
    """
    if mode not in ("auto", True, False):
        raise ConfigError(f"loader.batch_ring must be auto, true or false, not {mode!r}")
    workers, prefetch = settings["num_workers"], settings.get("prefetch_factor") or 0
    image = first[0] if isinstance(first, (tuple, list)) and first else None
    if (mode is False or workers == 0 or settings.get("pin_memory") or not settings.get("persistent_workers")
            or not isinstance(image, torch.Tensor)):
        return None
    batch_bytes = image.element_size() * image.nelement() * int(batch_size)
    if mode == "auto" and batch_bytes < shm.SMALL_BATCH_BYTES:
        return None
    need, memory = ring_bytes(batch_bytes, workers, prefetch), _memory_bytes()
    if free_bytes is not None and need > free_bytes * shm.SHM_FRACTION or \
            memory is not None and need > memory * RAM_FRACTION:
        log.info("batch ring left out: its %d slots would hold %.2f GB for the loader's life (/dev/shm has %s "
                 "free, the machine %s of memory; the ring may take %d%% of either); each batch takes a new "
                 "shared segment instead", workers * (prefetch + SPARE_SLOTS), need / 1e9, _gb(free_bytes),
                 _gb(memory), int(min(shm.SHM_FRACTION, RAM_FRACTION) * 100))
        return None
    ring = BatchRing(image, batch_size, workers, prefetch)
    log.info("batch ring: %d reused slots of %d x %s %s in /dev/shm (%.2f GB, set up in %.2f s): workers send "
             "slot numbers, not new segments", ring.slots.shape[0], batch_size, list(ring.sample_shape),
             str(ring.dtype).removeprefix("torch."), ring.nbytes / 1e9, ring.setup_seconds)
    return ring
