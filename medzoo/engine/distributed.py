"""DistributedDataParallel through torchrun: process-group setup, rank-0 duties, gathering predictions.

Launch with `torchrun --nproc_per_node=N -m medzoo.cli train ...` (see docs/distributed.md). Without torchrun's
environment everything here is a no-op and training runs in one process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun (or SLURM through submitit) describes (NCCL on CUDA, gloo on CPU);
    one process: no-op."""
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, MASTER_ADDR... from SLURM's variables
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    log.info("distributed: rank %d of %d (local rank %d, backend %s)", info.rank, info.world_size,
             info.local_rank, dist.get_backend())
    return info


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block first (say, to build a cache); the others run it after, finding its results."""
    if info.enabled and not info.is_main:
        dist.barrier()
    yield
    if info.enabled and info.is_main:
        dist.barrier()


def broadcast(value, info: DistInfo):
    """Rank 0's `value` on every rank."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_across(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise sum of `values` over all ranks (a copy; the input is left alone)."""
    if not info.enabled:
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total


def gather_predictions(indices: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                       info: DistInfo) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's (index, probs, label) rows, merged in dataset order, on every rank."""
    if not info.enabled:
        return probs, labels
    parts: list = [None] * info.world_size
    dist.all_gather_object(parts, (indices, probs, labels))
    all_indices = np.concatenate([p[0] for p in parts])
    order = np.argsort(all_indices, kind="stable")
    return np.concatenate([p[1] for p in parts])[order], np.concatenate([p[2] for p in parts])[order]


SINGLE_PROCESS = DistInfo()
