"""Small pieces every command shares: the run directory and logging of what was resolved."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig


def run_directory() -> Path:
    """This run's output folder (Hydra's run dir; `hydra.run.dir=DIR` puts it where the user says)."""
    path = Path(HydraConfig.get().runtime.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path
