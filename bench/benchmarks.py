"""Write docs/benchmarks.md from training runs: medzoo beside the paper each recipe reproduces, as mean +- sd
over seeds. Every medzoo figure is read from a run dir (metrics.json, .hydra/config.yaml, run.json); the paper's
figures are the reference table below, with its source.

    python bench/benchmarks.py RUN_DIR [RUN_DIR ...] [--out docs/benchmarks.md]
    python bench/benchmarks.py --runs-under /work/runs/baselines        # every run dir below a folder
    python bench/benchmarks.py --add-records baselines.json             # runs made on the GPU machine

A run dir is what `medzoo train ... hydra.run.dir=DIR` wrote. Each run read is also kept as a small record,
bench/baselines/RECIPE/seedN.json (the figures, hardware, time and versions, copied from the run dir by this
script), and the table is made from every record there: run dirs are not kept, the records are committed, so
the page can be regenerated after the runs are gone and runs made on other machines add up. Runs are grouped by
recipe; a recipe with fewer than 3 runs is listed with its count, so a single run is never shown as if it were a
mean. Sentences under the table come from bench/baselines/NOTES.md (one per line) and --note.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

RECORDS = Path(__file__).parent / "baselines"

# MedMNIST v2 (Yang et al., Scientific Data 2023), Table 3: test AUC / ACC, one run each, last-epoch weights of
# the released training script (medzoo keeps the checkpoint best on validation: the protocols differ there).
PAPER = "MedMNIST v2 (Yang et al. 2023), Table 3"
PAPER_ROWS: dict[str, tuple[str, str, float, float]] = {
    # recipe: (data set, paper's model, ACC, AUC)
    "breastmnist_resnet18": ("BreastMNIST", "ResNet-18 (28)", 0.863, 0.901),
    "breastmnist_resnet50": ("BreastMNIST", "ResNet-50 (28)", 0.812, 0.857),
    "pneumoniamnist_resnet18": ("PneumoniaMNIST", "ResNet-18 (28)", 0.854, 0.944),
    "pneumoniamnist_resnet50": ("PneumoniaMNIST", "ResNet-50 (28)", 0.854, 0.948),
    "adrenalmnist3d_resnet18_2d5": ("AdrenalMNIST3D", "ResNet-18 + 2.5D", 0.772, 0.718),
    "adrenalmnist3d_resnet18_3d": ("AdrenalMNIST3D", "ResNet-18 + 3D", 0.721, 0.827),
    "adrenalmnist3d_resnet18_acs": ("AdrenalMNIST3D", "ResNet-18 + ACS", 0.754, 0.839),
}
SEEDS_WANTED = 3


@dataclass
class Run:
    path: Path
    recipe: str
    seed: int
    accuracy: float
    auc: float | None
    best_epoch: int
    epochs: int
    hardware: str
    seconds: float | None
    finished: str | None = None
    versions: dict | None = None
    precision: str | None = None  # what trainer.precision resolved to (auto: bf16 only where the CPU has it)

    def record(self) -> dict:
        """What bench/baselines keeps of the run: the table's fields, when it finished and with what."""
        fields = {key: value for key, value in vars(self).items() if key != "path"}
        return {"run_dir": self.path.name, **fields}


def save_record(run: Run, records: Path = RECORDS) -> Path:
    path = records / run.recipe / f"seed{run.seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.record(), indent=1) + "\n")
    return path


def read_records(records: Path = RECORDS) -> list[Run]:
    runs = []
    for path in sorted(records.glob("*/seed*.json")):
        fields = json.loads(path.read_text())
        runs.append(Run(path=Path(fields.pop("run_dir")), **fields))
    return runs


def read_run(path: Path) -> Run | None:
    """One finished run, or None (no metrics.json: not finished, or not a training run)."""
    metrics_file, config_file = path / "metrics.json", path / ".hydra" / "config.yaml"
    if not metrics_file.is_file() or not config_file.is_file():
        return None
    metrics = json.loads(metrics_file.read_text())
    config = yaml.safe_load(config_file.read_text())
    info = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else {}
    seconds = info.get("seconds")
    if seconds is None:  # older runs: from the config written at the start to the metrics written at the end
        seconds = metrics_file.stat().st_mtime - config_file.stat().st_mtime
    test = metrics.get("test") or {}
    return Run(path, config.get("recipe_name") or "(no recipe)", int(config.get("seed", 0)),
               float(test["accuracy"]), test.get("auc"), int(metrics["best_epoch"]), int(metrics["epochs"]),
               info.get("hardware", "not recorded"), seconds, info.get("finished"), info.get("versions"),
               info.get("precision"))


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def verdict(values: list[float], paper: float) -> str:
    """At or above the paper, within one sd of it, or below."""
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    if mean >= paper:
        return "at or above"
    return "within 1 sd" if mean + sd >= paper else "below"


def table(runs: list[Run]) -> str:
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.recipe, r.seed)):
        groups.setdefault(run.recipe, []).append(run)
    lines = ["| data set | recipe | paper's model | seeds | test ACC (medzoo) | paper ACC | test AUC (medzoo) | "
             "paper AUC | vs paper (ACC / AUC) | best epoch | hardware, precision | time per run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for recipe, group in groups.items():
        data_set, model, paper_acc, paper_auc = PAPER_ROWS.get(recipe, ("-", "-", None, None))
        accs = [r.accuracy for r in group]
        aucs = [r.auc for r in group if r.auc is not None]
        seeds = ", ".join(str(r.seed) for r in group)
        count = f"{len(group)} ({seeds})" + ("" if len(group) >= SEEDS_WANTED else f", fewer than {SEEDS_WANTED}")
        compare = " / ".join(verdict(v, p) if v and p is not None else "-"
                             for v, p in ((accs, paper_acc), (aucs, paper_auc)))
        minutes = [f"{r.seconds / 60:.0f}" for r in group if r.seconds]  # each run's: a stall shows as itself
        hardware = "; ".join(sorted({r.hardware + (f", {r.precision}" if r.precision else "") for r in group}))
        lines.append(
            f"| {data_set} | `{recipe}` | {model} | {count} | {spread(accs)} | "
            f"{'-' if paper_acc is None else f'{paper_acc:.3f}'} | {spread(aucs) if aucs else '-'} | "
            f"{'-' if paper_auc is None else f'{paper_auc:.3f}'} | {compare} | "
            f"{', '.join(str(r.best_epoch) for r in group)} of {group[0].epochs} | {hardware} | "
            f"{', '.join(minutes) + ' min' if minutes else '-'} |")
    return "\n".join(lines)


def document(runs: list[Run], notes: list[str] | None = None) -> str:
    missing = [recipe for recipe in PAPER_ROWS if recipe not in {r.recipe for r in runs}]
    return "\n".join([
        "# Benchmarks",
        "",
        f"Generated by `python bench/benchmarks.py` on {datetime.now().date()} from {len(runs)} training run(s); "
        "do not edit by hand. Each medzoo figure is the test split of the checkpoint chosen on validation "
        "(`trainer.monitor`), as mean ± sd over seeds (`seed=0,1,2`); the paper's figures are one run each of "
        f"the last epoch's weights ({PAPER}). 'within 1 sd' means the paper's figure lies within one standard "
        "deviation of medzoo's mean.",
        "",
        table(runs),
        "",
        *[f"- {note}" for note in notes or []],
        *([""] if notes else []),
        "Not measured yet: " + (", ".join(f"`{r}`" for r in missing) if missing else "none") + ".",
        "",
        "Records read (bench/baselines): " + ", ".join(f"`{r.recipe}/seed{r.seed}`" for r in runs) + ".",
        "",
    ])


def add_records(path: Path, records: Path = RECORDS) -> list[Path]:
    """The records in a `bench/gpu_suite.sh --baselines` result file (baselines.json), kept like local ones. A
    --quick dry run's records (one epoch) are refused: they must never reach the table."""
    found = json.loads(path.read_text())
    if found.get("quick"):
        raise SystemExit(f"{path}: written by a --quick dry run (one epoch a run); its records are not kept")
    runs = []
    for fields in found.get("records", []):  # every record checked before any is kept
        fields = dict(fields)
        try:
            runs.append(Run(path=Path(fields.pop("run_dir")), **fields))
        except (KeyError, TypeError) as error:
            raise SystemExit(f"{path}: a record that is not bench/benchmarks.py's ({error}); none kept") from None
    return [save_record(run, records) for run in runs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run dirs written by `medzoo train`")
    parser.add_argument("--runs-under", type=Path, help="read every run dir below this folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "benchmarks.md")
    parser.add_argument("--note", action="append", default=[], help="a sentence printed under the table (repeatable)")
    parser.add_argument("--records", type=Path, default=RECORDS,
                        help="where each run's record is kept and the table's runs are read (default: %(default)s)")
    parser.add_argument("--add-records", type=Path, action="append", default=[],
                        help="baselines.json from `bench/gpu_suite.sh --baselines` (repeatable)")
    args = parser.parse_args()
    for result in args.add_records:
        for path in add_records(result, args.records):
            print(f"recorded {path}")
    paths = list(args.runs)
    if args.runs_under:
        paths += sorted(p.parent for p in args.runs_under.rglob("metrics.json"))
    for run in filter(None, map(read_run, paths)):
        print(f"recorded {save_record(run, args.records)}")
    runs = read_records(args.records)
    if not runs:
        print(f"no finished training run among the paths given, and no record in {args.records}", file=sys.stderr)
        return 2
    notes_file = args.records / "NOTES.md"
    notes = [line for line in notes_file.read_text().splitlines() if line.strip()] if notes_file.is_file() else []
    args.out.write_text(document(runs, notes + args.note))
    print(f"wrote {args.out}: {len(runs)} run(s) of {len({r.recipe for r in runs})} recipe(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
