"""Run logs: one CSV row per epoch and TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path


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


LOGGERS = {"csv": CSVLogger, "tensorboard": TensorBoardLogger}
