"""Optimisers and learning-rate schedules from config, with a registry instead of if-chains."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from medzoo.naming import unknown_name


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay conv and linear weights only; norms and biases are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: DictConfig, model: torch.nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
    """Instantiate `cfg` (a `_target_` optimiser with `_partial_: true`) on the model's parameter groups;
    `lr` overrides cfg.lr (e.g. scaled for a larger global batch)."""
    factory = instantiate(cfg, **({"lr": lr} if lr is not None else {}))
    weight_decay = float(cfg.get("weight_decay", 0.0))
    return factory(parameter_groups(model, weight_decay))


def _warmup_cosine(total: int, warmup: int, min_ratio: float, **_) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def _warmup_multistep(total: int, warmup: int, milestones: list[float], gamma: float, **_) -> Callable[[int], float]:
    steps = [int(m * total) for m in milestones]

    def factor(step: int) -> float:
        warm = (step + 1) / warmup if step < warmup else 1.0
        return warm * gamma ** sum(step >= s for s in steps)
    return factor


def _constant(total: int, warmup: int, **_) -> Callable[[int], float]:
    return lambda step: (step + 1) / warmup if step < warmup else 1.0


def _onecycle(total: int, warmup: int, min_ratio: float, **_) -> Callable[[int], float]:
    """Linear warm-up over `warmup` steps (30 % when 0), then cosine annealing to `min_ratio`."""
    return _warmup_cosine(total, warmup or max(1, int(0.3 * total)), min_ratio)


SCHEDULES: dict[str, Callable[..., Callable[[int], float]]] = {
    "cosine": _warmup_cosine, "onecycle": _onecycle, "multistep": _warmup_multistep, "constant": _constant,
}


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    max_epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR: warm-up of `warmup_epochs`, then the named schedule over the whole run."""
    if cfg.name not in SCHEDULES:
        raise unknown_name("schedule (sched.name)", cfg.name, SCHEDULES)
    total = max(1, steps_per_epoch * max_epochs)
    warmup = int(round(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch))
    options = {k: v for k, v in cfg.items() if k not in ("name", "warmup_epochs")}
    return torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES[cfg.name](total, warmup, **options))
