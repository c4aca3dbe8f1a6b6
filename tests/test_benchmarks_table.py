"""bench/benchmarks.py writes docs/benchmarks.md from run dirs alone: mean +- sd over seeds beside the paper."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

SCRIPT = Path(__file__).parents[1] / "bench" / "benchmarks.py"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmarks_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fake_run(folder: Path, recipe: str, seed: int, accuracy: float, auc: float) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"recipe_name": recipe, "seed": seed}))
    (folder / "metrics.json").write_text(json.dumps({"best_epoch": 40 + seed, "epochs": 100,
                                                     "test": {"accuracy": accuracy, "auc": auc}}))
    (folder / "run.json").write_text(json.dumps({"hardware": "test CPU", "seconds": 600.0 + 60 * seed}))
    return folder


def test_the_table_is_the_mean_and_sd_of_the_runs_beside_the_paper(tmp_path):
    accs, aucs = [0.85, 0.87, 0.86], [0.90, 0.91, 0.93]
    for seed, (acc, auc) in enumerate(zip(accs, aucs, strict=True)):
        fake_run(tmp_path / "runs" / f"breast{seed}", "breastmnist_resnet18", seed, acc, auc)
    fake_run(tmp_path / "runs" / "pneumonia0", "pneumoniamnist_resnet18", 0, 0.88, 0.95)
    (tmp_path / "runs" / "unfinished" / ".hydra").mkdir(parents=True)  # no metrics.json: not counted
    out = tmp_path / "benchmarks.md"
    done = subprocess.run([sys.executable, str(SCRIPT), "--runs-under", str(tmp_path / "runs"), "--out", str(out),
                           "--note", "seed 1 shared the CPU"],
                          capture_output=True, text=True, check=True)
    assert "4 run(s) of 2 recipe(s)" in done.stdout
    text = out.read_text()
    breast = next(line for line in text.splitlines() if "`breastmnist_resnet18`" in line).split(" | ")
    assert breast[3] == "3 (0, 1, 2)"
    assert breast[4] == f"{statistics.mean(accs):.3f} ± {statistics.stdev(accs):.3f}" and breast[5] == "0.863"
    assert breast[6] == f"{statistics.mean(aucs):.3f} ± {statistics.stdev(aucs):.3f}" and breast[7] == "0.901"
    assert breast[8] == "within 1 sd / at or above" and breast[9] == "40, 41, 42 of 100"
    assert breast[10] == "test CPU" and breast[11] == "10, 11, 12 min |"
    pneumonia = next(line for line in text.splitlines() if "`pneumoniamnist_resnet18`" in line).split(" | ")
    assert pneumonia[3] == "1 (0), fewer than 3" and pneumonia[4] == "0.880"  # a single run is not a mean
    assert "- seed 1 shared the CPU" in text and "Not measured yet:" in text and "`adrenalmnist3d_resnet18_acs`" in text.split("Not measured yet:")[1]


def test_verdicts_compare_the_mean_and_its_spread_with_the_paper():
    script = load_script()
    assert script.verdict([0.90, 0.94], 0.91) == "at or above"
    assert script.verdict([0.88, 0.90], 0.895) == "within 1 sd"
    assert script.verdict([0.80, 0.801], 0.85) == "below"
