"""Worker batches handed over through reused shared-memory slots (loader.batch_ring)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

import medzoo as medzoo_package
from medzoo.datasets.dataset import DataSplits
from medzoo.datasets.prepared_store import prepare
from medzoo.engine.loaders import build_loaders
from medzoo.loading import batch_ring
from medzoo.loading import shared_memory as shm
from medzoo.loading.batch_ring import BatchRing, RingDataLoader, SlotFilling, ring_for
from medzoo.loading.loader import make_loader
from medzoo.loading.settings import LoaderSettings
from medzoo.transforms.multichannel import Compose, Resize
from medzoo.transforms.spec import TransformSpec
from tests.helpers import make_image_folder, prepared_dataset
from tests.test_cli import TINY, medzoo
from tests.test_device_data import assert_loss_falls, split

CPU = torch.device("cpu")


class Noisy(Dataset):
    """Each (index, seed) gives its own random image, so that any mix-up of slots shows in the values."""

    def __init__(self, count: int = 11, shape: tuple[int, ...] = (3, 8, 8), odd_shape: tuple[int, ...] | None = None):
        self.count, self.shape, self.odd_shape = count, shape, odd_shape

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        shape = self.odd_shape if self.odd_shape and index % 2 else self.shape
        rng = np.random.default_rng([index, seed])
        return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)), index


def epochs(loader, count: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    out = []
    for number in range(count):
        loader.sampler.set_epoch(number)
        out.append([(images.clone(), labels.clone()) for images, labels in loader])
    return out


def assert_same(first, second) -> None:
    assert len(first) == len(second)
    for one, other in zip(first, second, strict=True):
        assert len(one) == len(other)
        for (a, x), (b, y) in zip(one, other, strict=True):
            assert torch.equal(a, b) and torch.equal(x, y)


@pytest.mark.parametrize("workers", [1, 2])
def test_ring_batches_equal_the_usual_ones_and_are_views_of_reused_slots(workers):
    ring_loader = make_loader(Noisy(), 2, shuffle=True, seed=3, num_workers=workers, batch_ring=True)
    plain = make_loader(Noisy(), 2, shuffle=True, seed=3, num_workers=workers, batch_ring=False)
    assert isinstance(ring_loader, RingDataLoader) and type(plain) is DataLoader
    assert_same(epochs(ring_loader, 3), epochs(plain, 3))  # 11 samples: a short last batch every epoch

    ring = ring_loader.ring
    assert ring.slots.shape[:2] == (workers * (ring_loader.prefetch_factor + 1), 2)
    start = ring.slots.untyped_storage().data_ptr()
    pointers = set()
    for number in range(3):
        ring_loader.sampler.set_epoch(number)
        for images, _ in ring_loader:
            pointer = images.untyped_storage().data_ptr()
            assert pointer == start  # a view of the ring's one storage, not a new segment
            pointers.add(images.storage_offset())
    assert len(pointers) == ring.slots.shape[0]  # 18 batches went round every slot, and no other


def test_a_batch_stays_valid_while_the_loop_takes_fewer_than_num_workers_more():
    workers = 2
    loader = make_loader(Noisy(40), 2, shuffle=False, seed=0, num_workers=workers, batch_ring=True)
    expected = [images for images, _ in make_loader(Noisy(40), 2, shuffle=False, seed=0, num_workers=0)]
    iterator = iter(loader)
    held = [next(iterator)[0] for _ in range(workers)]  # batch 0 and the next one, both views of slots
    assert all(torch.equal(images, expected[index]) for index, images in enumerate(held))
    for index, (images, _) in enumerate(iterator, start=workers):
        assert torch.equal(images, expected[index])


def test_samples_that_do_not_fit_the_slots_take_the_usual_path():
    data = Noisy(9, shape=(2, 6, 6), odd_shape=(2, 5, 7))  # the first sample sets the slots' shape
    ring_loader = make_loader(data, 1, shuffle=True, seed=0, num_workers=2, batch_ring=True)
    assert isinstance(ring_loader, RingDataLoader)
    assert_same(epochs(ring_loader, 2), epochs(make_loader(data, 1, shuffle=True, seed=0, num_workers=0), 2))


def test_auto_takes_the_ring_for_large_batches_that_fit_dev_shm(monkeypatch, caplog):
    assert type(make_loader(Noisy(), 2, shuffle=False, seed=0, num_workers=1)) is DataLoader  # 1.5 kB batches
    monkeypatch.setattr(shm, "SMALL_BATCH_BYTES", 1024)
    assert isinstance(make_loader(Noisy(), 2, shuffle=False, seed=0, num_workers=1), RingDataLoader)
    assert type(make_loader(Noisy(), 2, shuffle=False, seed=0, num_workers=0)) is DataLoader
    monkeypatch.setattr(shm, "shm_free_bytes", lambda *args: 4096)  # the usual settings fit, the ring not
    with caplog.at_level(logging.INFO, logger="medzoo.loading.batch_ring"):
        assert type(make_loader(Noisy(), 2, shuffle=False, seed=0, num_workers=1)) is DataLoader
    assert "batch ring left out" in caplog.text and "/dev/shm has 0.00 GB free" in caplog.text
    monkeypatch.setattr(shm, "shm_free_bytes", lambda *args: 10**12)
    monkeypatch.setattr(batch_ring, "_memory_bytes", lambda: 4096)  # a ring holds memory for the loader's life
    assert type(make_loader(Noisy(), 2, shuffle=False, seed=0, num_workers=1)) is DataLoader


def test_ring_for_leaves_pinned_and_short_lived_loaders_alone():
    first = Noisy()[(0, 0)]
    settings = {"num_workers": 2, "pin_memory": False, "persistent_workers": True, "prefetch_factor": 2}
    assert isinstance(ring_for(True, first, 4, settings, None), BatchRing)
    assert ring_for(True, first, 4, {**settings, "pin_memory": True}, None) is None
    assert ring_for(True, first, 4, {**settings, "persistent_workers": False}, None) is None
    assert ring_for(True, ("not a tensor", 1), 4, settings, None) is None
    assert ring_for(False, first, 4, settings, None) is None
    with pytest.raises(ValueError, match="loader.batch_ring must be auto, true or false"):
        ring_for("yes", first, 4, settings, None)
    with pytest.raises(ValueError, match="persistent workers"):
        RingDataLoader(Noisy(), ring=BatchRing(first[0], 2, 1, 2), batch_size=2, num_workers=1)


def test_build_loaders_passes_data_batch_ring_on():
    config = Path(medzoo_package.__file__).parent / "conf" / "transforms" / "stack_2d5_aug.yaml"
    spec = TransformSpec.from_config(OmegaConf.load(config))
    splits = DataSplits(split(), split(4), split(4), ["a", "b", "c"])
    data = LoaderSettings(batch_size=4, eval_batch_size=4, num_workers=1, batch_ring=True)
    loaders = build_loaders(splits, spec, data, seed=0, device=CPU)
    assert isinstance(loaders.train, RingDataLoader)
    assert type(loaders.val) is DataLoader and type(loaders.test) is DataLoader  # once an epoch: no ring
    with_ring = epochs(loaders.train, 2)
    data = replace(data, batch_ring=False)
    without = build_loaders(splits, spec, data, seed=0, device=CPU).train
    assert type(without) is DataLoader
    assert_same(with_ring, epochs(without, 2))


def test_a_recipe_trains_from_the_ring(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class_train=10, per_class_test=2)
    settings = [item for item in TINY if not item.startswith("loader.num_workers=")]
    medzoo("train", "recipe=brain_tumor_resnet18_cpu", f"data.root={root}", *settings, "loader.num_workers=1",
           "loader.batch_ring=true", "trainer.max_epochs=3", "data.clean_split=null", "logger.plots=false",
           f"hydra.run.dir={tmp_path / 'run'}")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 3
    assert "batch ring: " in (tmp_path / "run" / "cli.log").read_text()
    assert_loss_falls(tmp_path / "run")


# ----------------------------------------------------------------------------- samples built in their slot

def prepared_stacks(tmp_path: Path, count: int = 7, shape=(12, 10, 10)) -> Path:
    """A prepared cache of `count` int16 stacks of `shape` (C, H, W) in two classes."""
    rng = np.random.default_rng(0)
    sources = []
    for index in range(count):
        path = tmp_path / "src" / f"s{index}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.integers(-500, 3000, shape, dtype=np.int16))
        sources.append((path, "ab"[index % 2]))
    prepare(sources, tmp_path / "cache", progress=False)
    return tmp_path / "cache"


def stack_aug() -> Compose:
    config = Path(medzoo_package.__file__).parent / "conf" / "transforms" / "stack_2d5_aug.yaml"
    return TransformSpec.from_config(OmegaConf.load(config)).pipeline("train")


def as_worker(monkeypatch, worker_id: int = 0) -> None:
    """Run the ring's worker-side code in this process, as worker `worker_id`."""
    info = SimpleNamespace(id=worker_id, num_workers=worker_id + 1)
    monkeypatch.setattr(batch_ring, "get_worker_info", lambda: info)


@pytest.mark.parametrize("transform", [None, "stack_aug"])
def test_a_prepared_dataset_builds_its_samples_in_the_slot_rows(tmp_path, monkeypatch, transform):
    data = prepared_dataset(prepared_stacks(tmp_path), transform=stack_aug() if transform else None)
    first = data[(0, 5)]
    ring = BatchRing(first[0], batch_size=3, workers=1, prefetch_factor=1)
    as_worker(monkeypatch)
    items = [(4, 11), (1, 12), (6, 13)]
    samples = ring.fetch(data, items)
    slot = samples.slot
    for row, (image, label), item in zip(ring.slots[slot], samples, items, strict=True):
        assert image.data_ptr() == row.data_ptr()  # written where the batch will be read, not copied there
        expected_image, expected_label = data[item]
        assert torch.equal(image, expected_image) and label == expected_label
    copies = []
    monkeypatch.setattr(torch.Tensor, "copy_", lambda *args, **kwargs: copies.append(args))
    batch = ring.collate(samples)
    assert copies == []  # nothing left to copy into the slot
    images, labels = ring.resolve(batch)
    assert torch.equal(images, torch.stack([data[item][0] for item in items]))
    assert labels.tolist() == [data[item][1] for item in items]


def test_getitem_into_falls_back_where_the_slot_does_not_fit(tmp_path):
    cache = prepared_stacks(tmp_path)
    resized = Compose([Resize(6, 6)])
    data = prepared_dataset(cache, transform=resized)
    slot = torch.full((12, 10, 10), -1.0)
    image, label = data.getitem_into(3, slot)
    assert image.shape == (12, 6, 6) and torch.equal(image, data[3][0]) and label == data[3][1]
    assert torch.all(slot == -1)  # a result of another shape leaves the slot alone
    plain = prepared_dataset(cache)  # int16 samples: a float32 slot does not take them
    image, _ = plain.getitem_into(2, slot)
    assert image.dtype == torch.int16 and torch.equal(image, plain[2][0]) and torch.all(slot == -1)
    outside = prepared_dataset(cache, transform=lambda array: np.asarray(array, np.float32) * 2)  # no out=
    image, _ = outside.getitem_into(2, slot)
    assert image.data_ptr() == slot.data_ptr() and torch.equal(slot, plain[2][0].float() * 2)


@pytest.mark.parametrize("workers", [1, 2])
def test_ring_loader_over_a_prepared_cache_equals_the_usual_loader(tmp_path, workers):
    data = prepared_dataset(prepared_stacks(tmp_path), transform=stack_aug())
    ring_loader = make_loader(data, 2, shuffle=True, seed=4, num_workers=workers, batch_ring=True)
    assert isinstance(ring_loader.dataset, SlotFilling) and ring_loader.dataset.store.classes == data.store.classes
    plain = make_loader(data, 2, shuffle=True, seed=4, num_workers=0)
    assert_same(epochs(ring_loader, 3), epochs(plain, 3))  # 7 stacks: a short last batch every epoch
