"""Training throughput of the engine: images/s, the share of step time spent waiting for data, peak memory.

Used by `medzoo bench` (a recipe on this machine, real data) and by bench/train_throughput.py (synthetic suites).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from medzoo.engine.precision import Precision
from medzoo.engine.trainer import Trainer
from medzoo.errors import ConfigError


class TimedLoader:
    """A loader cut to at most `max_batches` batches that adds up the time spent waiting for each one.

    With `batches` (an iterator over `loader`, or one that goes round it), successive TimedLoaders continue
    the same iterator, so that workers started for a warm-up keep serving the timed steps; `max_batches` is
    then not capped at the loader's length.
    """

    def __init__(self, loader: DataLoader, max_batches: int | None = None, batches: Iterator[Any] | None = None):
        self.loader, self.wait, self.batches = loader, 0.0, batches
        self.served = 0  # samples handed out so far
        self.sampler, self.batch_size = loader.sampler, loader.batch_size
        if max_batches is None:
            self.max_batches = len(loader)
        else:
            self.max_batches = int(max_batches) if batches is not None else min(int(max_batches), len(loader))

    def __len__(self) -> int:
        return self.max_batches

    def __iter__(self) -> Iterator[Any]:
        iterator = self.batches if self.batches is not None else iter(self.loader)
        for _ in range(self.max_batches):
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.wait += time.perf_counter() - start
            self.served += len(batch[-1])  # (images, labels): the labels count the samples
            yield batch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Throughput:
    images: int
    seconds: float
    images_per_s: float
    data_wait_fraction: float
    peak_mem_gb: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_training(trainer: Trainer, loader: DataLoader, steps: int, warmup_steps: int = 2) -> Throughput:
    """Time up to `steps` training steps of `trainer` on `loader` after `warmup_steps` untimed ones (kernel
    selection, allocator, compilation, worker start-up), all in one pass over the loader."""
    device = trainer.device
    warmup_steps = min(warmup_steps, len(loader) - 1)
    steps = min(steps, len(loader) - warmup_steps)
    if steps < 1:
        raise ConfigError(f"the loader has {len(loader)} batch(es); timing needs at least 2 (lower the batch size)")
    batches = iter(loader)
    if warmup_steps > 0:
        trainer.train_one_epoch(TimedLoader(loader, warmup_steps, batches), 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = TimedLoader(loader, steps, batches)
    synchronize(device)
    start = time.perf_counter()
    trainer.train_one_epoch(timed, 0)
    synchronize(device)
    seconds = time.perf_counter() - start
    images = timed.served
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Throughput(images, seconds, images / seconds, timed.wait / seconds, peak)


def _cycled(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


@torch.no_grad()
def measure_inference(model: torch.nn.Module, loader: DataLoader, precision: Precision, device: torch.device,
                      channels_last: bool = False, steps: int = 10) -> Throughput:
    """Time `steps` forward passes (eval mode, the recipe's precision) after one untimed batch, going round
    the loader again where it has fewer batches."""
    model.eval()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    batches = _cycled(loader)

    def forward(images: torch.Tensor) -> None:
        with precision.autocast():
            model(images.to(device, non_blocking=True).contiguous(memory_format=layout))

    forward(next(batches)[0])  # warm-up
    timed = TimedLoader(loader, steps, batches)
    synchronize(device)
    started = time.perf_counter()
    for batch, _ in timed:
        forward(batch)
    synchronize(device)
    seconds = time.perf_counter() - started
    return Throughput(timed.served, seconds, timed.served / seconds, timed.wait / seconds, None)
