"""Training batches augmented on the device, one batch at a time, from a split held there or from a loader.

`DeviceResidentLoader` (loader.device_cache): small 2D sets fit in GPU memory many times over (the brain-tumour
set at 224 px is about 150 MB as uint8), so an epoch need not wait for JPEG decoding, CPU augmentation,
collate or host-to-device copies: the decoded, preprocessed uint8 images go to the device once, and each
batch is an index gather plus the recipe's per-batch transforms (`medzoo.transforms.batch`, vectorised over
the batch). The order and every batch's augmentation depend only on (seed, epoch, step), so resume stays
exact; under DDP each rank takes its share of the order.

`DeviceAugmentedLoader` (loader.device_augment): for sets too large to hold there (slice stacks of hundreds of
channels), CPU workers hand over the samples as stored (uint8 or int16: a quarter or a half of float32's
bytes through /dev/shm and the bus), and each batch is augmented on the device after a non-blocking copy,
with the same per-batch transforms and the same per-step seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from medzoo.datasets.arrays import SplitArrays
from medzoo.errors import ConfigError
from medzoo.loading.samplers import SeededSampler
from medzoo.transforms.batch import Compose

log = logging.getLogger(__name__)

# With device_cache=auto, a split is held on a CUDA device when it takes at most this share of the free memory.
AUTO_SHARE_OF_FREE_MEMORY = 0.25


def _on_off_auto(key: str, setting: bool | str | None) -> bool | None:
    """True / False for an explicit setting, None for `auto`."""
    if setting in (None, False, "false"):
        return False
    if setting in (True, "true"):
        return True
    if setting != "auto":
        raise ConfigError(f"{key} must be true, false or auto, got {setting!r}")
    return None


def wants_device_augment(setting: bool | str | None, device: torch.device) -> bool:
    """`true`: always (any device); `false`/null: never; `auto`: when batches go to a CUDA device."""
    chosen = _on_off_auto("loader.device_augment", setting)
    return device.type == "cuda" if chosen is None else chosen


def batch_seed(seed: int, epoch: int, rank: int, step: int) -> int:
    """The seed of one batch's augmentation: a function of (seed, epoch, rank, step) only."""
    return int(np.random.SeedSequence([seed, epoch, rank, step]).generate_state(1)[0])


def _check_transforms(transforms: Compose, setting: str) -> None:
    if not len(transforms.transforms):
        raise ConfigError(f"{setting} needs per-batch transforms: transforms.train is empty (give it at least "
                          "the Normalize of the eval pipeline; its per-batch twins run on the device).")


def wants_device_cache(setting: bool | str | None, split: SplitArrays, device: torch.device) -> bool:
    """`true`: always (any device); `false`/null: never; `auto`: on CUDA when the split fits comfortably."""
    chosen = _on_off_auto("loader.device_cache", setting)
    if chosen is not None:
        return chosen
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    fits = split.images.nbytes <= AUTO_SHARE_OF_FREE_MEMORY * free
    if not fits:
        log.info("loader.device_cache=auto: the split (%.1f GB) is over %.0f %% of the free GPU memory (%.1f GB); "
                 "loading through CPU workers instead", split.images.nbytes / 1e9, 100 * AUTO_SHARE_OF_FREE_MEMORY,
                 free / 1e9)
    return fits


class DeviceResidentLoader:
    """Batches of (images, labels) from a split held on `device`, with per-batch transforms applied there.

    It offers what the trainer uses of a DataLoader: `len`, iteration, `batch_size`, `num_workers` and a
    `sampler` with `set_epoch` and `indices`.
    """

    def __init__(self, split: SplitArrays, transforms: Compose, batch_size: int, *, seed: int,
                 device: torch.device, drop_last: bool = True, rank: int = 0, world_size: int = 1):
        _check_transforms(transforms, "loader.device_cache")
        self.images = torch.from_numpy(np.ascontiguousarray(split.images)).to(device)
        self.labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64)).to(device)
        self.transforms, self.batch_size, self.device = transforms, int(batch_size), device
        self.sampler = SeededSampler(len(split.labels), True, seed, rank, world_size, even=True)
        self.seed, self.rank, self.drop_last, self.num_workers = seed, rank, drop_last, 0
        log.info("training split on %s: %d images, %.1f MB as %s; augmentation per batch there",
                 device, len(split.labels), self.images.numel() * self.images.element_size() / 1e6,
                 self.images.dtype)

    def __len__(self) -> int:
        count = len(self.sampler)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(self.sampler.indices(), dtype=torch.long)
        for step in range(len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size].to(self.device, non_blocking=True)
            self.transforms.set_seed(batch_seed(self.seed, self.sampler.epoch, self.rank, step))
            yield self.transforms(self.images.index_select(0, index)), self.labels.index_select(0, index)


class DeviceAugmentedLoader:
    """The batches of `loader` (samples as stored, untransformed), moved to `device` and augmented there.

    Offers what the trainer uses of a DataLoader: `len`, iteration, `batch_size`, `num_workers` and the
    wrapped loader's `sampler`.
    """

    def __init__(self, loader, transforms: Compose, *, seed: int, device: torch.device, rank: int = 0):
        _check_transforms(transforms, "loader.device_augment")
        self.loader, self.transforms, self.device, self.seed, self.rank = loader, transforms, device, seed, rank
        self.sampler, self.batch_size, self.num_workers = loader.sampler, loader.batch_size, loader.num_workers
        log.info("training samples handed over as stored by %d worker(s); augmentation per batch on %s",
                 self.num_workers, device)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step, (images, labels) in enumerate(self.loader):
            images = images.to(self.device, non_blocking=True)
            self.transforms.set_seed(batch_seed(self.seed, self.sampler.epoch, self.rank, step))
            yield self.transforms(images), labels.to(self.device, non_blocking=True)
