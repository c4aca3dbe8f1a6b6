"""A training split held on the device and augmented per batch there (data.device_cache)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import medzoo as medzoo_package
from medzoo.datasets.base import DataSplits
from medzoo.datasets.cache import CachedSplit
from medzoo.engine.device_data import DeviceResidentLoader, wants_device_cache
from medzoo.engine.loaders import build_loaders
from medzoo.errors import ConfigError
from medzoo.transforms import batch
from medzoo.transforms.spec import TransformSpec
from tests.helpers import make_image_folder
from tests.test_cli import TINY, medzoo

CPU = torch.device("cpu")


def split(count: int = 10, size: int = 16) -> CachedSplit:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (count, 1, size, size), dtype=np.uint8)
    return CachedSplit(images, np.arange(count) % 3, [f"s/{i}" for i in range(count)])


def augment() -> batch.Compose:
    return batch.Compose([batch.HorizontalFlip(p=0.5), batch.GaussianNoise(std_range=(0.01, 0.05), p=0.5),
                          batch.Normalize(normalization="image")])


def epoch(loader: DeviceResidentLoader, number: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(number)
    return list(loader)


def test_every_sample_once_per_epoch_in_an_order_that_depends_on_seed_and_epoch():
    loader = DeviceResidentLoader(split(), augment(), 4, seed=0, device=CPU, drop_last=False)
    first = epoch(loader, 0)
    assert len(loader) == len(first) == 3 and [len(y) for _, y in first] == [4, 4, 2]
    assert Counter(torch.cat([y for _, y in first]).tolist()) == Counter((np.arange(10) % 3).tolist())
    images, _ = first[0]
    assert images.dtype == torch.float32 and images.shape == (4, 1, 16, 16)
    assert images.mean(dim=(1, 2, 3)).abs().max() < 1e-3  # the per-image z-score ran
    again = epoch(DeviceResidentLoader(split(), augment(), 4, seed=0, device=CPU, drop_last=False), 0)
    assert all(torch.equal(a, b) and torch.equal(x, y) for (a, x), (b, y) in zip(first, again, strict=True))
    later = epoch(loader, 1)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, later, strict=True))


def test_ranks_share_out_the_order_and_drop_last_gives_equal_steps():
    loaders = [DeviceResidentLoader(split(11), augment(), 2, seed=3, device=CPU, rank=r, world_size=2)
               for r in range(2)]
    assert [len(loader) for loader in loaders] == [2, 2]
    orders = [loader.sampler.indices() for loader in loaders]
    assert not set(orders[0]) & set(orders[1])


def test_the_switch_and_its_errors():
    assert wants_device_cache(True, split(), CPU) and not wants_device_cache(False, split(), CPU)
    assert not wants_device_cache("auto", split(), CPU)  # auto holds a split on CUDA devices only
    with pytest.raises(ConfigError, match="true, false or auto"):
        wants_device_cache("yes", split(), CPU)
    with pytest.raises(ConfigError, match="batch_train"):
        DeviceResidentLoader(split(), batch.Compose([]), 4, seed=0, device=CPU)
    with pytest.raises(ConfigError, match="not per-batch transforms"):
        TransformSpec(batch_train=[{"_target_": "medzoo.transforms.multichannel.HorizontalFlip"}])


def test_build_loaders_holds_the_training_split_when_asked():
    config = Path(medzoo_package.__file__).parent / "conf" / "transforms" / "brain_tumor_2d.yaml"
    cfg = OmegaConf.create({"transforms": OmegaConf.load(config)})
    cfg.transforms.image_size = 16
    spec = TransformSpec.from_config(cfg.transforms)
    splits = DataSplits(split(), split(4), split(4), ["a", "b", "c"])
    data = OmegaConf.create({"batch_size": 4, "eval_batch_size": 4, "num_workers": 0, "device_cache": True})
    loaders = build_loaders(splits, spec, data, seed=0, device=CPU)
    assert isinstance(loaders.train, DeviceResidentLoader)
    images, labels = next(iter(loaders.train))
    assert images.shape == (4, 1, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.long
    data.device_cache = False
    assert isinstance(build_loaders(splits, spec, data, seed=0, device=CPU).train, torch.utils.data.DataLoader)


def test_a_recipe_trains_with_its_split_on_the_device(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class_train=6, per_class_test=2)
    medzoo("train", "recipe=brain_tumor_resnet18", f"data.root={root}", *TINY, "data.device_cache=true",
           "trainer.max_epochs=1", "data.clean_split=null", "logger.plots=false", f"hydra.run.dir={tmp_path / 'run'}")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert "augmentation per batch there" in (tmp_path / "run" / "cli.log").read_text()
