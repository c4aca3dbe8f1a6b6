"""Small pieces every command shares: the run directory and logging of what was resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


def run_directory() -> Path:
    """This run's output folder (Hydra's run dir; `hydra.run.dir=DIR` puts it where the user says)."""
    path = Path(HydraConfig.get().runtime.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def plain(config: Any) -> dict:
    """A config node as a plain dict (resolved), for the layers below commands; None and a missing node give {}."""
    if config is None:
        return {}
    return dict(OmegaConf.to_container(config, resolve=True)) if OmegaConf.is_config(config) else dict(config)


def data_group(cfg: DictConfig) -> str | None:
    """The data config this run used (conf/data/NAME.yaml): Hydra's choice, else the data's name."""
    try:
        choice = HydraConfig.get().runtime.choices.get("data")
    except ValueError:  # not inside a Hydra app (called from Python)
        choice = None
    return choice or cfg.data.get("name")
