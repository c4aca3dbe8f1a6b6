"""`medzoo zoo list` and `medzoo zoo info name=NAME`: what the zoo publishes, and each checkpoint's card."""

from __future__ import annotations

import json

from omegaconf import DictConfig

from medzoo.errors import ConfigError
from medzoo.naming import unknown_name
from medzoo.zoo import hub
from medzoo.zoo.checkpoint import read_card


def headline(summary: dict) -> str:
    test = summary.get("test", {})
    parts = [f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, (int, float))]
    return "test " + ", ".join(parts) if parts else "no test metrics"


def list_checkpoints(cfg: DictConfig) -> list[str]:
    """One line per published checkpoint: name, task, headline test metric, and whether it is local."""
    lines = []
    for name, entry in hub.manifest().items():
        where = "packaged" if entry.file else "download"
        lines.append(f"{name:<36} {entry.task:<44} {headline(entry.summary):<40} {where}")
    print("\n".join(lines) if lines else "no published checkpoints")
    return lines


def info(cfg: DictConfig) -> dict:
    """The checkpoint's full card as JSON (metrics under `metrics.test`)."""
    if not cfg.name:
        raise ConfigError("medzoo zoo info needs name=NAME (see `medzoo zoo list`).")
    entries = hub.manifest()
    if cfg.name not in entries:
        raise unknown_name("checkpoint", cfg.name, entries)
    card = {"name": cfg.name, "sha256": entries[cfg.name].sha256, **read_card(hub.resolve(cfg.name))}
    print(json.dumps(card, indent=2, default=str))
    return card


ACTIONS = {"list": list_checkpoints, "info": info}


def zoo(cfg: DictConfig):
    if cfg.action not in ACTIONS:
        raise unknown_name("zoo action", cfg.action, ACTIONS)
    return ACTIONS[cfg.action](cfg)
