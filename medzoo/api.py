"""medzoo from Python: the command line's jobs as functions, with the same names and the same `key=value` overrides.

```python
import medzoo

run = medzoo.train("demo", "trainer.max_epochs=1")       # medzoo train recipe=demo trainer.max_epochs=1
run.metrics["test"]["accuracy"], run.checkpoint          # metrics.json, checkpoints/best.safetensors
medzoo.evaluate(run.checkpoint, "split=test")            # medzoo eval ckpt=... split=test
model = medzoo.load("brain_tumor_resnet18_cpu")          # a zoo name or a checkpoint file
model.predict("scan.jpg")                                # [{"path", "prediction", "probabilities", ...}]
medzoo.audit("/data/brain-tumor-mri")                    # medzoo audit data=brain_tumor data.root=...
```

Each job runs as the command line runs it: one Hydra run with its own folder (`runs/<command>/<time>`, or the
override `hydra.run.dir=DIR`), the same files written there, the same checks of every setting. Errors are raised
as `medzoo.errors.MedzooError` (one line: what is wrong and the fix), not printed. Sweeps (`-m`) stay on the
command line.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medzoo.engine.predictor import Predictor

__all__ = ["AuditResult", "Predictor", "Run", "audit", "bench", "evaluate", "load", "prepare", "train"]


@dataclass(frozen=True)
class Run:
    """A finished `medzoo.train` run."""

    dir: Path
    """The run's folder: metrics.json, checkpoints/, report.html, curves and confusion matrices."""
    metrics: dict[str, Any]
    """metrics.json as a dict: `metrics["test"]["accuracy"]`, `metrics["val"]`, `metrics["best_epoch"]`."""
    checkpoint: Path
    """checkpoints/best.safetensors: the model with the best validation score, with its card."""

    @property
    def report(self) -> Path:
        """report.html: the run on one page."""
        return self.dir / "report.html"


@dataclass(frozen=True)
class AuditResult:
    """A finished `medzoo.audit` run."""

    dir: Path
    """The run's folder: report.html, report.md, pairs.csv, clean_split.json, summary.json."""
    summary: dict[str, Any]
    """summary.json as a dict: files, exact_pairs, near_pairs, cross_split_pairs, label_conflict_pairs,
    test_leaked, test_deleaked, shortcut, ..."""
    pairs: list[dict[str, str]] = field(repr=False)
    """pairs.csv as rows: each duplicate pair, its kind (exact / near), splits, labels and whether it crosses
    splits or its labels conflict."""

    @property
    def report(self) -> Path:
        """report.html: the findings with the duplicate pairs side by side."""
        return self.dir / "report.html"

    @property
    def clean_split(self) -> dict[str, Any]:
        """clean_split.json: the de-leaked test files and the near-duplicate groups that training keeps together."""
        return json.loads((self.dir / "clean_split.json").read_text())


@contextmanager
def _callers_logging() -> Iterator[None]:
    """The caller's logging as it was once the job is done: Hydra sets up the root logger for a job (the console
    and the run's cli.log); afterwards a notebook's own logging is back and the run's log file is closed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def _run_command(name: str, overrides: tuple[str, ...]) -> tuple[Any, Path]:
    """Run command `name` with `overrides` as `medzoo NAME ...` would (the same checks, config and run folder);
    returns the command's return value and its run folder."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf

    from medzoo.cli import COMMANDS, command_overrides, import_user_modules
    from medzoo.errors import ConfigError, MedzooError

    bad = [arg for arg in overrides if not isinstance(arg, str) or arg.startswith("-")]
    if bad:
        raise ConfigError(f"medzoo.{name}: overrides are 'key=value' strings as on the command line, not {bad[0]!r}"
                          " (sweeps with -m and flags such as --cfg stay on the command line).")
    argv = command_overrides(name, list(overrides))
    job: Callable = COMMANDS[name].function()
    found: dict[str, Any] = {}

    def task(cfg) -> Any:
        import_user_modules(OmegaConf.select(cfg, "imports", default=None))
        found["dir"] = Path(HydraConfig.get().runtime.output_dir)
        return job(cfg)

    with initialize_config_module(config_module="medzoo.conf", job_name="cli", version_base="1.3"), \
            _callers_logging():
        try:
            result = GlobalHydra.instance().hydra.run(config_name=COMMANDS[name].config, task_function=task,
                                                      overrides=argv).return_value
        except InstantiationException as exc:  # a recipe's class refused a setting: raise that, as the CLI says it
            cause = exc.__cause__
            while cause is not None and not isinstance(cause, MedzooError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None
    return result, found["dir"]


def train(recipe: str | None = None, *overrides: str) -> Run:
    """Train a recipe, as `medzoo train recipe=RECIPE KEY=VALUE ...` does, and return the finished run.

    `recipe` is a recipe name (`medzoo --help` lists them) or None for the bare defaults; `overrides` are the command
    line's `key=value` strings, e.g. `medzoo.train("demo", "trainer.max_epochs=1", "hydra.run.dir=runs/first")`.
    """
    argv = ((f"recipe={recipe}",) if recipe else ()) + overrides
    _, run_dir = _run_command("train", argv)
    return Run(dir=run_dir, metrics=json.loads((run_dir / "metrics.json").read_text()),
               checkpoint=run_dir / "checkpoints" / "best.safetensors")


def evaluate(ckpt: str | os.PathLike, *overrides: str) -> dict[str, Any]:
    """A checkpoint's metrics on a split, with its own preprocessing, as `medzoo eval ckpt=CKPT ...` writes them
    into metrics.json (`{"test": {"accuracy", "balanced_accuracy", "auc", "ece", ...}, ...}`).

    `ckpt` is a zoo name or a checkpoint file; `overrides` e.g. `"split=val"`, `"data.root=/data/brain-tumor-mri"`.
    The run folder is `result["run_dir"]`.
    """
    from medzoo.cli import hydra_quote

    metrics, run_dir = _run_command("eval", (f"ckpt={hydra_quote(os.fspath(ckpt))}", *overrides))
    return {**metrics, "run_dir": str(run_dir)}


def load(name_or_path: str | os.PathLike, device: str = "auto") -> Predictor:
    """A checkpoint ready to answer: `load("brain_tumor_resnet18_cpu")` (a zoo name, fetched and verified once) or
    `load("runs/train/.../checkpoints/best.safetensors")`. `device`: "auto" (a GPU when there is one), "cpu",
    "cuda:0". The result's `predict(inputs)` gives what `medzoo predict` writes, `explain(input)` a Grad-CAM map,
    `card` the model card."""
    return Predictor(name_or_path, device)


def audit(root: str | os.PathLike | None = None, *overrides: str) -> AuditResult:
    """Audit a dataset, as `medzoo audit data=brain_tumor data.root=ROOT ...` does: duplicates, leaks between
    splits, label conflicts, size shortcuts (with `"audit.label_issues=true"` suspected label errors).

    `root` holds `Training/<class>/*` and `Testing/<class>/*`; None looks in MEDZOO_DATA as the command does. Another
    data config: `audit(root, "data=brain_tumor_multisource")`.
    """
    from medzoo.cli import hydra_quote

    argv = ((f"data.root={hydra_quote(os.fspath(root))}",) if root is not None else ()) + overrides
    _, run_dir = _run_command("audit", argv)
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "pairs.csv", newline="") as handle:
        pairs = list(csv.DictReader(handle))
    return AuditResult(dir=run_dir, summary=summary, pairs=pairs)


def prepare(inputs: str | os.PathLike, out: str | os.PathLike, *overrides: str) -> dict[str, Any]:
    """Decode volumes, DICOM series, TIFF or NumPy stacks once into a verified, memory-mapped cache, as
    `medzoo prepare inputs=INPUTS out=OUT ...` does; returns its summary (samples, classes, skipped, ...).

    `inputs` holds `<class>/<file or DICOM series folder>`; e.g. `prepare("scans", "cache", "data.layout=slices",
    "data.channels=64")`, then `train(None, "data=prepared", f"data.path={cache}", ...)`.
    """
    from medzoo.cli import hydra_quote

    summary, _ = _run_command("prepare", (f"inputs={hydra_quote(os.fspath(inputs))}",
                                          f"out={hydra_quote(os.fspath(out))}", *overrides))
    return summary


def bench(recipe: str, *overrides: str) -> dict[str, Any]:
    """How fast a recipe trains here, as `medzoo bench recipe=RECIPE ...` measures it: images/s, the share of time
    spent waiting for data, epoch and recipe time estimates (`"bench.steps=20"` and the recipe's own overrides)."""
    result, _ = _run_command("bench", (f"recipe={recipe}", *overrides))
    return result
