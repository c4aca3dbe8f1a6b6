"""Experiment trackers as run loggers: MLflow (`logger=mlflow`) and Weights & Biases (`logger=wandb`).

A tracker is a logger of `engine/loggers.py` `LOGGERS` with three more calls: `log_params` once before the first
epoch (the resolved config, flattened), `log_artifacts` once after the run (report.html, metrics.json, the best
checkpoint) and `close`. Their packages are optional (`pip install 'medzoo[track]'`); `check_installed` runs on
every process before any work, so a missing one stops the run at once with the pip command to fix it.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from medzoo.errors import ConfigError

log = logging.getLogger(__name__)

# MLflow refuses a parameter value longer than this (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH).
MLFLOW_PARAM_CHARS = 6000
MLFLOW_BATCH = 100  # params per log_batch call that MLflow accepts
WANDB_MODES = ("offline", "online", "disabled")


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as `{"optim.lr": 0.001, "model.name": "resnet18", ...}`: numbers, strings, booleans and None
    stay as they are; lists (and empty mappings) become their text, `[32, 32]`."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def require(module: str, logger: str) -> ModuleType:
    """Import a tracker's package, or a one-line ConfigError with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) in (module, None)
        reason = "is not installed" if missing else f"does not import ({exc})"
        raise ConfigError(f"logger={logger}: the {module} package {reason}; pip install {module} "
                          f"(or pip install 'medzoo[track]'), or choose another logger (logger=default).") from exc


def default_run_name(run_dir: Path) -> str:
    """`train/2026-12-06_10-00-00` for a run, `2026-12-06_10-00-00/3` for sweep job 3."""
    return f"{run_dir.parent.name}/{run_dir.name}"


def epoch_scalars(row: dict[str, float]) -> dict[str, float]:
    """An epoch row's numbers, without the epoch itself (it is the step)."""
    return {key: float(value) for key, value in row.items()
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)}


def mlflow_store_uri(setting: str) -> str:
    """A local folder (`runs/mlruns`, `file:...`) -> an absolute `file://` URI; a server or database URI as it is.

    MLflow 3 keeps its file store in maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE is set: a local
    folder is what this setting asks for, so it is allowed here (an explicit MLFLOW_ALLOW_FILE_STORE=false stays).
    """
    parsed = urlparse(setting)
    if len(parsed.scheme) > 1 and parsed.scheme != "file":  # one letter: a Windows drive, not a scheme
        return setting
    folder = Path(parsed.path if parsed.scheme == "file" else setting).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return folder.as_uri()


class MLflowLogger:
    """One MLflow run per training run: the config as params, each epoch's row as metrics (step = epoch), and
    report.html, metrics.json and `checkpoints/best.safetensors` as artifacts."""

    @staticmethod
    def check_installed() -> None:
        require("mlflow", "mlflow")

    def __init__(self, run_dir: Path, tracking_uri: str = "runs/mlruns", experiment_name: str | None = None,
                 run_name: str | None = None, log_checkpoint: bool = True):
        require("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        self.uri = mlflow_store_uri(str(tracking_uri))
        self.client = MlflowClient(tracking_uri=self.uri)
        name = experiment_name or "medzoo"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name or default_run_name(run_dir),
                                             tags={"medzoo.run_dir": str(run_dir.resolve())}).info.run_id
        self.log_checkpoint = log_checkpoint
        log.info("MLflow: run %s in experiment '%s' at %s", self.run_id, name, self.uri)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        cut = sorted(key for key, value in params.items() if len(str(value)) > MLFLOW_PARAM_CHARS)
        if cut:
            log.warning("MLflow: %d params cut to %d characters (MLflow's limit): %s", len(cut),
                        MLFLOW_PARAM_CHARS, ", ".join(cut))
        entries = [Param(key, str(value)[:MLFLOW_PARAM_CHARS]) for key, value in params.items()]
        for start in range(0, len(entries), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=entries[start:start + MLFLOW_BATCH])

    def log_epoch(self, row: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp, step = int(time.time() * 1000), int(row["epoch"])
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, stamp, step)
                                                    for key, value in epoch_scalars(row).items()])

    def log_artifacts(self, files: list[Path], checkpoint: Path | None) -> None:
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        if checkpoint is not None and self.log_checkpoint:
            self.client.log_artifact(self.run_id, str(checkpoint), "checkpoints")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbLogger:
    """One W&B run per training run (offline by default: `wandb sync <dir>/wandb/offline-run-*` uploads it): the
    config, each epoch's row (step = epoch), report.html and metrics.json as run files, and the best checkpoint as a
    `model` artifact."""

    @staticmethod
    def check_installed() -> None:
        require("wandb", "wandb")

    def __init__(self, run_dir: Path, project: str = "medzoo", entity: str | None = None, name: str | None = None,
                 group: str | None = None, tags: list[str] | tuple[str, ...] = (), mode: str = "offline",
                 dir: str | None = None, log_checkpoint: bool = True):
        if mode not in WANDB_MODES:
            raise ConfigError(f"logger.wandb.mode={mode}: one of {', '.join(WANDB_MODES)}.")
        self.wandb = require("wandb", "wandb")
        folder = Path(dir).expanduser() if dir else run_dir
        folder.mkdir(parents=True, exist_ok=True)
        # finish_previous: a sweep job that failed before close() must not hand its open run to the next job
        self.run = self.wandb.init(project=project, entity=entity, name=name or default_run_name(run_dir), group=group,
                                   tags=list(tags) or None, mode=mode, dir=str(folder), reinit="finish_previous")
        self.log_checkpoint = log_checkpoint
        log.info("W&B: run %s (%s) in %s", self.run.id, mode, Path(self.run.dir).parent)

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_epoch(self, row: dict[str, float]) -> None:
        self.run.log(epoch_scalars(row), step=int(row["epoch"]))

    def log_artifacts(self, files: list[Path], checkpoint: Path | None) -> None:
        for path in files:
            self.run.save(str(path), base_path=str(path.parent), policy="now")
        if checkpoint is not None and self.log_checkpoint:
            artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model")
            artifact.add_file(str(checkpoint), policy="immutable")  # the run dir keeps it: no staging copy
            self.run.log_artifact(artifact)

    def close(self) -> None:
        self.run.finish()
