"""Data loaders for the three splits from a source's arrays and the transform spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from medzoo.datasets.base import ArrayDataset, DataSplits, make_loader
from medzoo.transforms.spec import TransformSpec


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader


def eval_loader(splits: DataSplits, split: str, spec: TransformSpec, data_cfg: Any, device: torch.device) -> DataLoader:
    """An ordered, unaugmented loader over one split."""
    dataset = ArrayDataset(splits.split(split), spec.pipeline("eval"))
    batch = int(data_cfg.get("eval_batch_size") or data_cfg.batch_size)
    return make_loader(dataset, batch, shuffle=False, seed=0, num_workers=data_cfg.get("num_workers", 0),
                       pin_memory=device.type == "cuda")


def build_loaders(splits: DataSplits, spec: TransformSpec, data_cfg: Any, seed: int, device: torch.device) -> Loaders:
    """Shuffled, augmented training batches; ordered evaluation batches for val and test."""
    train = make_loader(ArrayDataset(splits.train, spec.pipeline("train")), int(data_cfg.batch_size), shuffle=True,
                        seed=seed, num_workers=data_cfg.get("num_workers", 0), drop_last=len(splits.train.labels) >
                        int(data_cfg.batch_size), pin_memory=device.type == "cuda")
    return Loaders(train, eval_loader(splits, "val", spec, data_cfg, device),
                   eval_loader(splits, "test", spec, data_cfg, device))
