"""Device choice and description, seeding and deterministic mode."""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

from medzoo.engine.precision import cpu_has_bf16
from medzoo.errors import ConfigError


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """What a figure was measured on: the GPU's name, or the CPU's model with its cores, torch's threads and the
    vector instructions torch runs on it (one model name covers CPUs with and without AVX-512 and native bf16,
    which decide both the speed and what `trainer.precision=auto` picks)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    vector = torch.backends.cpu.get_cpu_capability() + (" + bf16" if cpu_has_bf16() else "")
    return f"{cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads, {vector})"


def resolve_device(requested: str = "auto") -> torch.device:
    """`auto`: the first CUDA device when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={requested} but no CUDA device is available; use trainer.device=cpu.")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; in deterministic mode also pick deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
