"""Data loaders for the three splits from a source's arrays and the transform spec."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from medzoo.datasets.dataset import ArrayDataset, DataSplits
from medzoo.engine.distributed import SINGLE_PROCESS, DistInfo
from medzoo.loading.device_data import (
    DeviceAugmentedLoader,
    DeviceResidentLoader,
    wants_device_augment,
    wants_device_cache,
)
from medzoo.loading.loader import make_loader
from medzoo.loading.settings import LoaderSettings
from medzoo.transforms.spec import TransformSpec


@dataclass
class Loaders:
    train: DataLoader | DeviceResidentLoader | DeviceAugmentedLoader
    val: DataLoader
    test: DataLoader


def eval_loader(splits: DataSplits, split: str, spec: TransformSpec, settings: LoaderSettings, device: torch.device,
                dist: DistInfo = SINGLE_PROCESS) -> DataLoader:
    """An ordered, unaugmented loader over one split (under DDP, this rank's share of it)."""
    dataset = ArrayDataset(splits.split(split), spec.pipeline("eval"))
    return make_loader(dataset, settings.eval_batch, shuffle=False, seed=0, num_workers=settings.num_workers,
                       pin_memory=device.type == "cuda", rank=dist.rank, world_size=dist.world_size,
                       batch_ring=False)  # run once an epoch: not worth shared memory held for the whole run


def build_loaders(splits: DataSplits, spec: TransformSpec, settings: LoaderSettings, seed: int, device: torch.device,
                  dist: DistInfo = SINGLE_PROCESS) -> Loaders:
    """Shuffled, augmented training batches; ordered evaluation batches for val and test.

    Training batches are augmented per sample by CPU workers (`transforms.train`), or per batch on the
    device (the batch twins of `transforms.train`) from a split held there (loader.device_cache) or from workers that
    hand over the samples as stored (loader.device_augment).
    """
    batch = settings.batch_size  # per process: the global batch is batch x world size
    drop_last = len(splits.train.labels) // dist.world_size > batch
    # balanced batches (splits.train_strata) come from the seeded sampler, which the device-resident path lacks
    if splits.train_strata is None and wants_device_cache(settings.device_cache, splits.train, device):
        train = DeviceResidentLoader(splits.train, spec.batch_pipeline(), batch, seed=seed, device=device,
                                     drop_last=drop_last, rank=dist.rank, world_size=dist.world_size)
    else:
        on_device = wants_device_augment(settings.device_augment, device)
        dataset = ArrayDataset(splits.train, None, keep_dtype=True) if on_device \
            else ArrayDataset(splits.train, spec.pipeline("train"))
        train = make_loader(dataset, batch, shuffle=True, seed=seed, num_workers=settings.num_workers,
                            drop_last=drop_last, pin_memory=device.type == "cuda", rank=dist.rank,
                            world_size=dist.world_size, batch_ring=settings.batch_ring,
                            strata=splits.train_strata)
        if on_device:
            train = DeviceAugmentedLoader(train, spec.batch_pipeline(), seed=seed, device=device, rank=dist.rank)
    return Loaders(train, eval_loader(splits, "val", spec, settings, device, dist),
                   eval_loader(splits, "test", spec, settings, device, dist))
