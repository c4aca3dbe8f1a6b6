"""DataLoader settings that fit the machine: shared memory for worker batches, pinned memory, prefetching.

DataLoader workers hand every batch to the training process through shared memory (/dev/shm on Linux).
Up to `num_workers x prefetch_factor` batches sit there at once, and with 2.5D stacks one sample can be
262 MB (1000 x 256 x 256 float32): 4 workers x 2 batches x 8 samples is 16.8 GB. A container's default
/dev/shm is 64 MB, and running out kills a worker with a bus error that names nothing. `loader_settings`
checks first, logs the numbers and the settings to lower, and falls back to what fits.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SHM_PATH = Path("/dev/shm")
# Share of the free space the queued batches may take: the batch being trained on and the one held by the
# pin-memory thread live there too, as do other processes' segments.
SHM_FRACTION = 0.8
# Batches up to this size get PREFETCH_SMALL batches per worker in flight: cheap, and it hides jitter in
# read times. Larger ones get PREFETCH_LARGE (torch's default): each takes long enough to hide the next.
SMALL_BATCH_BYTES = 64 * 2**20
PREFETCH_SMALL, PREFETCH_LARGE = 4, 2


def resolve_workers(num_workers: int | str) -> int:
    """`auto`: leave one core to the training process, at most 8 workers."""
    if num_workers == "auto":
        return max(0, min(8, (os.cpu_count() or 1) - 1))
    return int(num_workers)


def shm_free_bytes(path: Path = SHM_PATH) -> int | None:
    """Free bytes of the shared-memory filesystem, or None where there is none to check (macOS, Windows)."""
    try:
        stat = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return stat.f_bavail * stat.f_frsize


def shm_needed_bytes(sample_bytes: int, batch_size: int, num_workers: int, prefetch_factor: int) -> int:
    """Bytes of the batches workers may have queued at once: workers x prefetch_factor x batch x sample."""
    return num_workers * prefetch_factor * batch_size * sample_bytes


def _gb(count: float) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def _is_cuda(device: str | torch.device | None) -> bool:
    if device is None:
        return False
    if str(device) == "auto":
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def loader_settings(sample_bytes: int, batch_size: int, num_workers: int | str,
                    device: str | torch.device | None, prefetch_factor: int | None = None) -> dict:
    """DataLoader keyword arguments (num_workers, pin_memory, persistent_workers, prefetch_factor) that fit.

    Args:
        sample_bytes: bytes of one sample as the workers return it (after the per-sample transforms).
        num_workers: a count or "auto" (see `resolve_workers`).
        device: where batches go; pinned memory only pays (and only works) for CUDA.
        prefetch_factor: batches in flight per worker; None chooses by batch size.
    """
    workers = resolve_workers(num_workers)
    batch_bytes = int(sample_bytes) * int(batch_size)
    if prefetch_factor is None:
        prefetch_factor = PREFETCH_SMALL if batch_bytes <= SMALL_BATCH_BYTES else PREFETCH_LARGE
    prefetch = max(1, int(prefetch_factor))
    free = shm_free_bytes() if workers > 0 else None
    if free is not None:
        budget = int(free * SHM_FRACTION)
        need = shm_needed_bytes(sample_bytes, batch_size, workers, prefetch)
        if need > budget:
            fit_prefetch = budget // (workers * batch_bytes) if batch_bytes else prefetch
            if fit_prefetch >= 1:
                new_workers, new_prefetch = workers, int(min(prefetch, fit_prefetch))
            else:
                new_workers, new_prefetch = int(min(workers, budget // batch_bytes)) if batch_bytes else 0, 1
            fallback = (f"num_workers={new_workers}, prefetch_factor={new_prefetch}" if new_workers else
                        "num_workers=0 (batches load in the training process: slower, but no /dev/shm)")
            log.warning(
                "%s has %s free (%d%% usable: %s), but %d worker(s) x prefetch_factor %d x batch %d x %s per "
                "sample = %s of batches would wait there. Using %s. To choose yourself, lower "
                "loader.num_workers or loader.batch_size (or the per-sample size: crop, fewer channels), or give "
                "the machine more shared memory (docker run --shm-size=16g, or a larger /dev/shm mount).",
                SHM_PATH, _gb(free),
                int(SHM_FRACTION * 100), _gb(budget), workers, prefetch, batch_size, _gb(sample_bytes),
                _gb(need), fallback)
            workers, prefetch = new_workers, new_prefetch
    return {"num_workers": workers, "pin_memory": _is_cuda(device), "persistent_workers": workers > 0,
            "prefetch_factor": prefetch if workers > 0 else None}
