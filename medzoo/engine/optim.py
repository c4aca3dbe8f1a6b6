"""Optimisers and learning-rate schedules from config, with a registry instead of if-chains."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from medzoo.close_names import unknown_name
from medzoo.errors import ConfigError


def parameter_groups(model: torch.nn.Module, weight_decay: float, lr: float | None = None,
                     backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Decay conv and linear weights only (norms and biases are not decayed); with `backbone_lr_scale` < 1
    every layer but the classifier learns at `lr` x that scale (fine-tuning)."""
    head = getattr(model, "classifier", None)
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            is_head = head is not None and (name == head or name.startswith(head + "."))
            groups.setdefault((param.ndim > 1, is_head or backbone_lr_scale == 1.0), []).append(param)
    out = []
    for (decayed, full_lr), params in sorted(groups.items(), reverse=True):
        group: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decayed else 0.0}
        if not full_lr and lr is not None:
            group["lr"] = lr * backbone_lr_scale
        out.append(group)
    return out


def build_optimizer(cfg: Mapping[str, Any], model: torch.nn.Module,
                    lr: float | None = None) -> torch.optim.Optimizer:
    """Instantiate `cfg` (a `_target_` optimiser with `_partial_: true`) on the model's parameter groups;
    `lr` overrides cfg's lr (e.g. scaled for a larger global batch)."""
    settings = {k: v for k, v in cfg.items() if k != "backbone_lr_scale"}
    lr = float(cfg["lr"]) if lr is None else lr
    factory = instantiate(OmegaConf.create(settings), lr=lr)
    return factory(parameter_groups(model, float(cfg.get("weight_decay", 0.0)), lr,
                                    float(cfg.get("backbone_lr_scale", 1.0))))


def freeze(model: torch.nn.Module, prefixes: list[str]) -> int:
    """Stop gradients for parameters under the named modules (e.g. conv1, bn1, layer1); returns how many."""
    frozen = 0
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            param.requires_grad_(False)
            frozen += param.numel()
    if prefixes and not frozen:
        raise ConfigError(f"trainer.freeze={prefixes} names no parameters; use module names such as conv1, layer1")
    return frozen


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


def build_scheduler(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    max_epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR: warm-up of `warmup_epochs`, then the named schedule over the whole run."""
    name = cfg.get("name")
    if name not in SCHEDULES:
        raise unknown_name("schedule (sched.name)", str(name), SCHEDULES)
    total = max(1, steps_per_epoch * max_epochs)
    warmup = int(round(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch))
    options = {k: v for k, v in cfg.items() if k not in ("name", "warmup_epochs")}
    return torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES[name](total, warmup, **options))
