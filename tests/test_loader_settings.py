"""make_loader takes its workers, pinned memory, prefetching and /dev/shm check from shm.loader_settings."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.dataset import ArrayDataset
from medzoo.loading import shared_memory as shm
from medzoo.loading.loader import make_loader, sample_nbytes

SHAPE = (50, 32, 32)  # uint8 in the cache, float32 out of the transform: 204,800 bytes per sample
SAMPLE_BYTES = 4 * int(np.prod(SHAPE)) + 8  # the image and its label


class Halve:
    """A per-sample transform that keeps the shape and returns float32 (as the real pipelines do)."""

    def set_seed(self, seed: int) -> None:
        pass

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image.astype(np.float32) / 2


def dataset(count: int = 8) -> ArrayDataset:
    images = np.random.default_rng(0).integers(0, 255, (count, *SHAPE), dtype=np.uint8)
    return ArrayDataset(SplitArrays(images, np.arange(count) % 2, [str(i) for i in range(count)]), Halve())


def free_shm(monkeypatch: pytest.MonkeyPatch, free: int | None) -> None:
    monkeypatch.setattr(shm, "shm_free_bytes", lambda path=shm.SHM_PATH: free)


def test_sample_bytes_are_measured_after_the_transform():
    assert sample_nbytes(dataset()[(0, 1)]) == SAMPLE_BYTES
    assert sample_nbytes({"image": np.zeros(3, np.int16), "meta": [torch.zeros(2), 1]}) == 6 + 8 + 8


def test_keeps_workers_and_prefetch_when_shm_has_room(monkeypatch, caplog):
    free_shm(monkeypatch, 10**12)
    with caplog.at_level(logging.WARNING, logger="medzoo.loading.shared_memory"):
        loader = make_loader(dataset(), 4, shuffle=True, seed=0, num_workers=2)
    assert not caplog.records
    assert loader.num_workers == 2 and loader.persistent_workers is True
    assert loader.prefetch_factor == shm.PREFETCH_SMALL  # 4 x 205 kB batches: small, prefetch deeper
    assert loader.pin_memory is False  # batches stay on the CPU


def test_lowers_prefetch_first_when_shm_is_tight(monkeypatch, caplog):
    batch_bytes = 4 * SAMPLE_BYTES
    # 80% of this holds 2 workers x 2 batches, not 2 x 4: prefetch drops to 2, the workers stay
    free_shm(monkeypatch, int(2 * 2 * batch_bytes / shm.SHM_FRACTION) + 1000)
    with caplog.at_level(logging.WARNING, logger="medzoo.loading.shared_memory"):
        loader = make_loader(dataset(), 4, shuffle=True, seed=0, num_workers=2)
    assert loader.num_workers == 2 and loader.prefetch_factor == 2 and loader.persistent_workers is True
    message = caplog.records[0].getMessage()
    assert "2 worker(s) x prefetch_factor 4 x batch 4 x 0.2 MB" in message
    assert "num_workers=2, prefetch_factor=2" in message and "loader.num_workers" in message


def test_falls_back_to_the_training_process_and_says_so_when_shm_is_too_small(monkeypatch, caplog):
    free_shm(monkeypatch, 100_000)  # 80 kB usable: not one 820 kB batch
    with caplog.at_level(logging.WARNING, logger="medzoo.loading.shared_memory"):
        loader = make_loader(dataset(), 4, shuffle=False, seed=0, num_workers=2)
    assert loader.num_workers == 0 and loader.persistent_workers is False and loader.prefetch_factor is None
    message = caplog.records[0].getMessage()
    assert "/dev/shm has 0.1 MB free (80% usable: 0.1 MB)" in message
    assert "2 worker(s) x prefetch_factor 4 x batch 4" in message and "num_workers=0" in message
    assert "lower loader.num_workers or loader.batch_size" in message and "--shm-size" in message
    images, labels = next(iter(loader))  # and it still loads
    assert images.shape == (4, *SHAPE) and images.dtype == torch.float32 and labels.tolist() == [0, 1, 0, 1]


def test_nothing_is_measured_without_workers_or_without_shm(monkeypatch):
    class Untouchable(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, item):
            raise AssertionError("make_loader read a sample it did not need")

    free_shm(monkeypatch, 10**12)
    assert make_loader(Untouchable(), 2, shuffle=False, seed=0, num_workers=0).num_workers == 0
    free_shm(monkeypatch, None)  # no /dev/shm to check (macOS, Windows): as asked
    loader = make_loader(Untouchable(), 2, shuffle=False, seed=0, num_workers=2)
    assert loader.num_workers == 2 and loader.prefetch_factor == shm.PREFETCH_SMALL
    given = make_loader(Untouchable(), 2, shuffle=False, seed=0, num_workers=2, sample_bytes=300 * 10**6)
    assert given.prefetch_factor == shm.PREFETCH_LARGE  # 600 MB batches: torch's default depth


def test_pins_memory_only_for_cuda(monkeypatch):
    free_shm(monkeypatch, None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    data = dataset()
    assert make_loader(data, 2, shuffle=False, seed=0, num_workers=0, device="cuda").pin_memory is True
    assert make_loader(data, 2, shuffle=False, seed=0, num_workers=0, pin_memory=True).pin_memory is True
    assert make_loader(data, 2, shuffle=False, seed=0, num_workers=0, device="cpu").pin_memory is False
    assert make_loader(data, 2, shuffle=False, seed=0, num_workers=0, device="cuda",
                       pin_memory=False).pin_memory is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert make_loader(data, 2, shuffle=False, seed=0, num_workers=0, device="cuda").pin_memory is False


def test_worker_batches_match_the_training_process_batches(monkeypatch):
    free_shm(monkeypatch, 10**12)
    data = dataset(6)
    with_workers = make_loader(data, 3, shuffle=True, seed=4, num_workers=1)
    in_process = make_loader(data, 3, shuffle=True, seed=4, num_workers=0)
    assert with_workers.num_workers == 1 and with_workers.persistent_workers is True
    for (a, la), (b, lb) in zip(with_workers, in_process, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
