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
    (folder / "run.json").write_text(json.dumps({"hardware": "test CPU", "seconds": 600.0 + 60 * seed,
                                                 "precision": "fp32"}))
    return folder


def test_the_table_is_the_mean_and_sd_of_the_runs_beside_the_paper(tmp_path):
    accs, aucs = [0.85, 0.87, 0.86], [0.90, 0.91, 0.93]
    for seed, (acc, auc) in enumerate(zip(accs, aucs, strict=True)):
        fake_run(tmp_path / "runs" / f"breast{seed}", "breastmnist_resnet18", seed, acc, auc)
    fake_run(tmp_path / "runs" / "pneumonia0", "pneumoniamnist_resnet18", 0, 0.88, 0.95)
    (tmp_path / "runs" / "unfinished" / ".hydra").mkdir(parents=True)  # no metrics.json: not counted
    out, records = tmp_path / "benchmarks.md", tmp_path / "records"
    done = subprocess.run([sys.executable, str(SCRIPT), "--runs-under", str(tmp_path / "runs"), "--out", str(out),
                           "--records", str(records), "--note", "seed 1 shared the CPU"],
                          capture_output=True, text=True, check=True)
    assert "4 run(s) of 2 recipe(s)" in done.stdout
    assert sorted(p.relative_to(records).as_posix() for p in records.rglob("*.json")) == [
        "breastmnist_resnet18/seed0.json", "breastmnist_resnet18/seed1.json", "breastmnist_resnet18/seed2.json",
        "pneumoniamnist_resnet18/seed0.json"]
    text = out.read_text()
    breast = next(line for line in text.splitlines() if "`breastmnist_resnet18`" in line).split(" | ")
    assert breast[3] == "3 (0, 1, 2)"
    assert breast[4] == f"{statistics.mean(accs):.3f} ± {statistics.stdev(accs):.3f}" and breast[5] == "0.863"
    assert breast[6] == f"{statistics.mean(aucs):.3f} ± {statistics.stdev(aucs):.3f}" and breast[7] == "0.901"
    assert breast[8] == "within 1 sd / at or above" and breast[9] == "40, 41, 42 of 100"
    assert breast[10] == "test CPU, fp32" and breast[11] == "10, 11, 12 min |"
    pneumonia = next(line for line in text.splitlines() if "`pneumoniamnist_resnet18`" in line).split(" | ")
    assert pneumonia[3] == "1 (0), fewer than 3" and pneumonia[4] == "0.880"  # a single run is not a mean
    assert "- seed 1 shared the CPU" in text and "Not measured yet:" in text and "`adrenalmnist3d_resnet18_acs`" in text.split("Not measured yet:")[1]


def test_verdicts_compare_the_mean_and_its_spread_with_the_paper():
    script = load_script()
    assert script.verdict([0.90, 0.94], 0.91) == "at or above"
    assert script.verdict([0.88, 0.90], 0.895) == "within 1 sd"
    assert script.verdict([0.80, 0.801], 0.85) == "below"


def test_the_records_outlive_the_run_dirs_and_add_up_across_machines(tmp_path):
    records, out = tmp_path / "records", tmp_path / "benchmarks.md"
    first = fake_run(tmp_path / "machine_a" / "s0", "breastmnist_resnet50", 0, 0.80, 0.85)
    run = [sys.executable, str(SCRIPT), "--out", str(out), "--records", str(records)]
    subprocess.run([*run, str(first)], capture_output=True, text=True, check=True)
    for path in first.rglob("*"):  # the run dir is gone (a fresh session, another machine)
        if path.is_file():
            path.unlink()
    (records / "NOTES.md").write_text("seed 0 ran on machine A.\n")
    second = fake_run(tmp_path / "machine_b" / "s1", "breastmnist_resnet50", 1, 0.84, 0.87)
    done = subprocess.run([*run, str(second)], capture_output=True, text=True, check=True)
    assert "2 run(s) of 1 recipe(s)" in done.stdout
    row = next(line for line in out.read_text().splitlines() if "`breastmnist_resnet50`" in line).split(" | ")
    assert row[3] == "2 (0, 1), fewer than 3" and row[4] == f"{statistics.mean([0.80, 0.84]):.3f} ± " \
        f"{statistics.stdev([0.80, 0.84]):.3f}"
    assert "- seed 0 ran on machine A." in out.read_text()
    empty = subprocess.run([*run[:-2], "--records", str(tmp_path / "none")], capture_output=True, text=True)
    assert empty.returncode == 2 and "no record" in empty.stderr


def load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite_script", SCRIPT.parent / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_records_made_on_the_gpu_machine_come_back_in_one_file_and_join_the_table(tmp_path):
    """`bench/gpu_suite.sh --baselines` keeps a record per finished run under its work dir; the summary packs them
    into $OUT/baselines.json, and `benchmarks.py --add-records` keeps them beside the local ones."""
    suite, script = load_suite(), load_script()
    work, out, records = tmp_path / "work", tmp_path / "out", tmp_path / "records"
    for seed, acc in enumerate([0.80, 0.82, 0.84]):
        run = script.read_run(fake_run(tmp_path / "gpu" / f"seed{seed}", "pneumoniamnist_resnet50", seed, acc, 0.95))
        script.save_record(run, work / suite.BASELINES / "records")
    suite.summarize(work, out, "cuda", quick=False)
    packed = json.loads((out / "baselines.json").read_text())
    assert packed["device"] == "cuda" and [r["seed"] for r in packed["records"]] == [0, 1, 2]
    assert [r["accuracy"] for r in json.loads((out / "summary.json").read_text())["baselines"]] == [0.80, 0.82, 0.84]
    run = [sys.executable, str(SCRIPT), "--out", str(tmp_path / "benchmarks.md"), "--records", str(records)]
    done = subprocess.run([*run, "--add-records", str(out / "baselines.json")], capture_output=True, text=True,
                          check=True)
    assert "3 run(s) of 1 recipe(s)" in done.stdout
    row = next(line for line in (tmp_path / "benchmarks.md").read_text().splitlines()
               if "`pneumoniamnist_resnet50`" in line).split(" | ")
    assert row[3] == "3 (0, 1, 2)" and row[4] == "0.820 ± 0.020"

    suite.summarize(work, out, "cpu", quick=True)  # a dry run's one-epoch records never reach the table
    refused = subprocess.run([*run, "--records", str(tmp_path / "other"), "--add-records",
                              str(out / "baselines.json")], capture_output=True, text=True)
    assert refused.returncode != 0 and "--quick dry run" in refused.stderr
    assert not (tmp_path / "other").exists()


def test_recipe_headers_and_the_readme_state_the_records_mean_and_sd():
    """docs/benchmarks.md is generated; the recipe headers and README rows are written by hand from it, so they are
    checked against the same records: each recipe with 3 seeds or more states its ACC and AUC as mean +- sd."""
    script = load_script()
    repo = SCRIPT.parents[1]
    readme_rows = {line.split("`")[1]: line for line in (repo / "README.md").read_text().splitlines()
                   if line.startswith("| `")}
    by_recipe: dict[str, list] = {}
    for run in script.read_records():
        by_recipe.setdefault(run.recipe, []).append(run)
    checked = 0
    for recipe, runs in by_recipe.items():
        if len(runs) < script.SEEDS_WANTED:
            continue
        figures = [script.spread([run.accuracy for run in runs]), script.spread([run.auc for run in runs])]
        header = (repo / "medzoo" / "recipes" / f"{recipe}.yaml").read_text().replace("+-", "±")
        header = " ".join(line.lstrip("# ") for line in header.splitlines() if line.startswith("#"))
        for figure in figures:
            assert figure in header, f"the header of {recipe}.yaml does not state {figure} (bench/baselines)"
            assert figure in readme_rows[recipe], f"README's row for {recipe} does not state {figure}"
        checked += 1
    assert checked >= 2  # BreastMNIST ResNet-18 and the ACS row have their three seeds
