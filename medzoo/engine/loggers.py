"""Run logs: one CSV row per epoch, TensorBoard scalars, and the experiment trackers (engine/trackers.py).

`logger.loggers` names entries of `LOGGERS`. Every logger has `log_epoch(row)` (the trainer calls it once per epoch
on the main process); a logger may also have `log_params(params)` (once, before training: the resolved config,
flattened), `log_artifacts(files, checkpoint)` (once, after the run) and `close()`, and a class may have
`check_installed()` (called on every process before any work).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from medzoo.close_names import unknown_name
from medzoo.engine.trackers import MLflowLogger, WandbLogger, flatten_params


class CSVLogger:
    """Appends one row per epoch to `metrics.csv`; a resumed run keeps the rows it already had."""

    def __init__(self, run_dir: Path, filename: str = "metrics.csv"):
        self.path = run_dir / filename

    def log_epoch(self, row: dict[str, float]) -> None:
        rows = self.read()
        rows = [r for r in rows if int(float(r["epoch"])) < int(row["epoch"])] + [{k: str(v) for k, v in row.items()}]
        fields = list(dict.fromkeys(k for r in rows for k in r))
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))


class TensorBoardLogger:
    """Scalars for TensorBoard under `<run dir>/tensorboard`."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log_epoch(self, row: dict[str, float]) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


LOGGERS: dict[str, type] = {"csv": CSVLogger, "tensorboard": TensorBoardLogger, "mlflow": MLflowLogger,
                             "wandb": WandbLogger}


def check_loggers(names: list[str]) -> None:
    """Every name in `logger.loggers` is a logger and its package is installed (before any work, on every process)."""
    for name in names:
        if name not in LOGGERS:
            raise unknown_name("logger (logger.loggers)", name, LOGGERS)
        getattr(LOGGERS[name], "check_installed", lambda: None)()


def open_loggers(config: dict[str, Any], run_dir: Path) -> list[Any]:
    """The loggers that `config["logger"]["loggers"]` names (`config`: the run's resolved config as plain values),
    each built with its own settings (`logger.<name>.*`); those that take params get the config, flattened."""
    options = config["logger"]
    check_loggers(options["loggers"])
    loggers = [LOGGERS[name](run_dir, **(options.get(name) or {})) for name in options["loggers"]]
    params = flatten_params(config)
    for logger in loggers:
        getattr(logger, "log_params", lambda _: None)(params)
    return loggers


def log_artifacts(loggers: list[Any], files: list[Path], checkpoint: Path | None) -> None:
    """Hand the run's files that exist (report.html, metrics.json) and the best checkpoint to the trackers."""
    files = [path for path in files if path.is_file()]
    checkpoint = checkpoint if checkpoint is not None and checkpoint.is_file() else None
    for logger in loggers:
        getattr(logger, "log_artifacts", lambda *_: None)(files, checkpoint)
