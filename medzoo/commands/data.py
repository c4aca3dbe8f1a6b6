"""`medzoo data fetch name=NAME`: download a public dataset into MEDZOO_DATA and verify every file."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from medzoo.datasets.roots import data_home
from medzoo.errors import ConfigError

log = logging.getLogger(__name__)


def fetch(cfg: DictConfig) -> Path:
    from medzoo.datasets.fetch import fetch_dataset

    root = fetch_dataset(cfg.name, Path(cfg.dest).expanduser() if cfg.dest else data_home(), url=cfg.url)
    log.info("%s is ready at %s (every file verified); use data.root=%s", cfg.name, root, root)
    print(root)
    return root


ACTIONS = {"fetch": fetch}


def data(cfg: DictConfig):
    if cfg.action not in ACTIONS:
        raise ConfigError(f"unknown data action '{cfg.action}'; known: {', '.join(ACTIONS)} (medzoo data fetch name=...).")
    return ACTIONS[cfg.action](cfg)
