"""Helper of `bench/gpu_suite.sh` (issue 19): the steps that are clearer in Python than in bash.

    python bench/gpu_suite.py prepare-data --src DIR --dst DIR [--quality 90]   # here: the carried data copy
    python bench/gpu_suite.py travel-size --carry PATH ...                      # here: will the call fit?
    python bench/gpu_suite.py subset --src DIR --dst DIR --train N --test N     # --quick: a few images per class
    python bench/gpu_suite.py install --wheels DIR --site DIR --versions FILE   # device: wheels + medzoo, versions
    python bench/gpu_suite.py baselines --jobs R:SEED ... --work DIR --device cuda  # device: MedMNIST seeds
    python bench/gpu_suite.py summarize --work DIR --out DIR --device cuda      # after every stage: summary.json

Only the standard library is imported at the top: `install` runs before hydra, monai & co. exist, and
`summarize` must work whatever an earlier stage left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = "brain_tumor_resnet18"
MIB = 2**20
TRAVEL_LIMIT = 64 * MIB  # the device tool sends at most this much: working tree + carried paths
OUT_FILE_LIMIT = 8  # and brings back at most this many files from $OUT
# Importing these is what the suite needs from an environment; the GPU image lacks the third-party ones.
NEEDED = ("medzoo", "hydra", "omegaconf", "albumentations", "monai", "nibabel", "pydicom", "imagehash")
# Wheels that device-wheels.sh fetches but the suite never imports there (linting, SLURM, the MONAI bundle
# command line) or that the GPU image already has in the versions its own packages were built with.
SKIP_WHEELS = {"ruff", "submitit", "hydra-submitit-launcher", "fire", "termcolor",  # dev tools
               "huggingface-hub", "httpx2", "httpcore2", "truststore", "anyio", "h11", "click",  # the image has hub
               "joblib", "threadpoolctl", "narwhals", "cloudpickle", "flatbuffers", "ml-dtypes"}  # in the image


# ---------------------------------------------------------------------------------------------- prepare (here)

def recipe_preprocess(recipe: str):
    """The recipe's own `pre` steps (crop to the head, resize), composed as `medzoo train` composes them."""
    from hydra import compose, initialize_config_module

    from medzoo.recipes import register_recipes
    from medzoo.transforms.spec import TransformSpec

    register_recipes()
    with initialize_config_module("medzoo.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"recipe={recipe}"])
    spec = TransformSpec.from_config(cfg.transforms)
    return spec, int(cfg.data.channels)


def prepare_data(src: Path, dst: Path, quality: int, recipe: str) -> None:
    """Write the recipe's preprocessed images (same names, grayscale JPEG) so the set fits the device call.

    The original set is 96 MB and the device call carries at most 64 MiB, wheels and tree included. The
    recipe's deterministic `pre` steps (crop to the foreground, resize to the training size) run here, on the
    original files, and the suite trains with `transforms.pre=[]`: running the crop again on the small copy
    is not a no-op (its box follows the brightest pixel, which the resize averages away), while this way the
    device caches what the CPU run cached, up to one JPEG re-encoding (about 1.2/255 mean error at quality 90).
    """
    import numpy as np
    from PIL import Image

    from medzoo.datasets.images import decode_image, to_channels
    from medzoo.transforms.layout import to_channel_first

    spec, channels = recipe_preprocess(recipe)
    if channels != 1:
        raise SystemExit(f"{recipe}: data.channels={channels}; this copy is written as grayscale JPEG (1 channel).")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no images under {src}: set GPU_SUITE_SOURCE (or --src) to the brain-tumour folder "
                         "holding Training/ and Testing/ (../shared/data/brain-tumor-mri).")
    settings = {"source": str(src.resolve()), "files": len(files), "recipe": recipe, "pre": spec.pre_spec,
                "quality": quality}
    marker = dst.parent / f"{dst.name}.json"
    if marker.is_file() and {k: v for k, v in json.loads(marker.read_text()).items() if k in settings} == settings:
        print(f"{dst}: already prepared with these settings ({marker})")
        return
    shutil.rmtree(dst, ignore_errors=True)

    def convert(path: Path) -> int:
        pixels = to_channel_first(to_channels(decode_image(path).pixels, channels))
        out = dst / path.relative_to(src).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(spec.preprocess(pixels)[0])).save(out, "JPEG", quality=quality,
                                                                                optimize=True)
        return out.stat().st_size

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:  # PIL and OpenCV release the GIL
        sizes = list(pool.map(convert, files))
    source_bytes = sum(p.stat().st_size for p in files)
    marker.write_text(json.dumps({**settings, "bytes": sum(sizes), "source_bytes": source_bytes,
                                  "made": date.today().isoformat()}, indent=2) + "\n")
    print(f"{dst}: {len(files)} images, {sum(sizes) / MIB:.1f} MiB (source {source_bytes / MIB:.1f} MiB), "
          f"{recipe} pre steps, JPEG quality {quality}")


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def travel_size(carry: list[Path]) -> int:
    """What the device call would send (tracked and untracked-not-ignored files, plus `carry`), against 64 MiB."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    sizes = {name: (REPO / name).stat().st_size for name in listed if name and (REPO / name).is_file()}
    tree = sum(sizes.values())
    carried = {str(path): tree_size(REPO / path) for path in carry}
    total = tree + sum(carried.values())
    print(f"working tree {tree / MIB:.1f} MiB" + "".join(f" + {k} {v / MIB:.1f} MiB" for k, v in carried.items())
          + f" = {total / MIB:.1f} MiB (limit {TRAVEL_LIMIT / MIB:.0f} MiB)")
    if total <= TRAVEL_LIMIT:
        return 0
    big = sorted(((size, name) for name, size in sizes.items() if size >= MIB), reverse=True)
    print("too large for one device call. Largest files of the tree:\n"
          + "\n".join(f"  {size / MIB:6.1f} MiB  {name}" for size, name in big[:10]), file=sys.stderr)
    tracked = set(subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
                  .stdout.decode().split("\0"))
    aside, excess = [], total - TRAVEL_LIMIT
    for size, name in big:
        if excess <= 0:
            break
        if name in tracked:  # git gives a tracked file back; an untracked one would be lost if forgotten
            aside.append(name)
            excess -= size
    if excess > 0:
        print("Moving tracked files aside is not enough: lower --quality of the carried data.", file=sys.stderr)
    else:
        files = " ".join(aside)
        print("Tracked files travel too. For the call, move these aside (the suite does not read them), then "
              f"restore them from git:\n  mkdir -p /tmp/travel-aside && mv {files} /tmp/travel-aside/\n"
              f"  ... device call ...\n  git checkout -- {files} && rm -rf /tmp/travel-aside", file=sys.stderr)
    return 1


# ------------------------------------------------------------------------------------------- --quick subset

def subset(src: Path, dst: Path, train: int, test: int) -> None:
    """The first `train` / `test` images of each class folder (sorted names): a run of seconds, same code path."""
    shutil.rmtree(dst, ignore_errors=True)
    for split, count in (("Training", train), ("Testing", test)):
        for folder in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            (dst / split / folder.name).mkdir(parents=True)
            for path in sorted(folder.iterdir())[:count]:
                shutil.copy2(path, dst / split / folder.name / path.name)
    print(f"{dst}: {train} training and {test} test images per class from {src}")


# ------------------------------------------------------------------------------------------ install (device)

PROBE = r"""
import json, os, platform, subprocess, sys
found = {"python": platform.python_version(), "executable": sys.executable, "host_cpus": os.cpu_count()}
try:
    import torch
    found["torch"], found["torch_cuda"] = torch.__version__, torch.version.cuda
    found["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        found["gpu"] = torch.cuda.get_device_name(0)
        found["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        found["gpu_capability"] = f"{props.major}.{props.minor}"
        found["gpu_count"] = torch.cuda.device_count()
    else:
        found["gpu"] = None
    from medzoo.zoo.card import versions
    found.update({f"pkg_{k}": v for k, v in versions().items() if k != "python"})
    import hydra
    found["pkg_hydra-core"] = hydra.__version__
except Exception as exc:  # report what is there; the stage's rc says whether it was enough
    found["error"] = f"{type(exc).__name__}: {exc}"
try:
    found["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=20).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    found["driver"] = None
print(json.dumps(found))
"""


def importable(python: str) -> str | None:
    """None when every needed package imports with `python` (in this environment), else the error."""
    done = subprocess.run([python, "-c", f"import {', '.join(NEEDED)}"], capture_output=True, text=True, cwd=REPO)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["import failed"])[-1]


def install(wheels: Path, site: Path, versions_file: Path) -> int:
    """Install the carried wheels and medzoo into `site` (already on PYTHONPATH) unless all is importable."""
    python, rc = sys.executable, 0
    missing = importable(python)
    if missing is None:
        print(f"{python}: medzoo and its dependencies import already; nothing to install")
    else:
        print(f"{python}: {missing}; installing from {wheels} into {site}")
        found = sorted(wheels.glob("*.whl"))
        if not found:
            print(f"no wheels in {wheels}: run `bash bench/gpu_suite.sh --prepare` on the development machine "
                  "and carry build/gpu-suite", file=sys.stderr)
            return 1
        pip = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
               "--disable-pip-version-check", "--target", str(site)]
        rc = subprocess.run([*pip, *map(str, found)]).returncode
        # medzoo itself from this tree: no index there, so build with the image's setuptools (no isolation).
        built = subprocess.run([*pip, "--no-build-isolation", str(REPO)]).returncode
        if built:
            print("medzoo did not install as a package; it still imports from the tree (python -m medzoo.cli), "
                  "but checkpoint cards will say 'medzoo: not installed'", file=sys.stderr)
        missing = importable(python)
        if missing:
            print(f"still not importable after the install: {missing}", file=sys.stderr)
            rc = rc or 1
    probe = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, cwd=REPO)
    found = json.loads(probe.stdout) if probe.returncode == 0 and probe.stdout.strip() else {"error": probe.stderr}
    versions_file.write_text(json.dumps(found, indent=2) + "\n")
    print("versions:\n" + "\n".join(f"  {k}: {v}" for k, v in found.items()))
    return rc or int("error" in found)


# ------------------------------------------------------------------------------------------- baselines (device)

BASELINES = "baselines"  # the stage's folder under the work dir: a run dir per job, and records/ (bench/baselines)


def run_baselines(jobs: list[str], work: Path, device: str, quick: bool) -> int:
    """Issue 17's seeds that need a GPU: one `medzoo train recipe=R seed=N` per job, in order. Each finished run
    becomes a record at once (bench/benchmarks.py's format, under WORK/baselines/records), so a stage cut off by
    its box still brings back every run that finished."""
    sys.path.insert(0, str(Path(__file__).parent))
    from benchmarks import read_run, save_record

    failed = 0
    for job in jobs:
        recipe, _, seed = job.partition(":")
        if not recipe or not seed.isdigit():
            print(f"baselines: {job!r} is not RECIPE:SEED (e.g. pneumoniamnist_resnet50:0)", file=sys.stderr)
            failed += 1
            continue
        run_dir = work / BASELINES / recipe / f"seed{seed}"
        command = [sys.executable, "-m", "medzoo.cli", "train", f"recipe={recipe}", f"seed={seed}",
                   f"hydra.run.dir={run_dir}", f"trainer.device={device}", "trainer.progress=false",
                   *(["trainer.max_epochs=1"] if quick else [])]
        print(f"== baseline {recipe} seed {seed}", flush=True)
        rc = subprocess.run(command, cwd=REPO).returncode
        run = read_run(run_dir) if rc == 0 else None
        if run is None:
            print(f"baseline {recipe} seed {seed}: rc {rc}, no metrics.json; no record", file=sys.stderr)
            failed += 1
            continue
        save_record(run, work / BASELINES / "records")
        auc = "-" if run.auc is None else f"{run.auc:.4f}"
        print(f"baseline {recipe} seed {seed}: test ACC {run.accuracy:.4f}, AUC {auc}, best epoch "
              f"{run.best_epoch} of {run.epochs}, {run.seconds or 0:.0f} s on {run.hardware}", flush=True)
    return 1 if failed else 0


def baseline_records(work: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((work / BASELINES / "records").glob("*/seed*.json"))]


# ------------------------------------------------------------------------------------------------ summarize

ROW = re.compile(r"^(?P<model>\S+)\s+(?P<dims>\d)D\s+(?P<size>\d+) C=(?P<channels>\d+)\s+(?P<loader>\S+)\s+"
                 r"cl=(?P<cl>\w+)\s+compile=(?P<compile>\w+)\s+(?P<ips>[\d.]+) img/s\s+plain\s+(?P<plain>[\d.]+)\s+"
                 r"ratio (?P<ratio>[\d.]+)\s+wait (?P<wait>[\d.]+)(?:\s+peak (?P<peak>[\d.]+) GB)?")


def throughput_rows(work: Path) -> tuple[list[dict], bool]:
    """The rows of train_throughput.json, or, when the stage was cut off before writing it, of its log."""
    path = work / "train_throughput.json"
    if path.is_file():
        return json.loads(path.read_text())["results"], False
    rows = []
    log = work / "train_throughput.log"
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        if match := ROW.match(line.strip()):
            g = match.groupdict()
            rows.append({"model": g["model"], "spatial_dims": int(g["dims"]), "size": int(g["size"]),
                         "channels": int(g["channels"]), "loader": g["loader"], "channels_last": g["cl"] == "True",
                         "compile": g["compile"] == "True", "images_per_s": float(g["ips"]),
                         "plain_images_per_s": float(g["plain"]), "engine_vs_plain": float(g["ratio"]),
                         "data_wait_fraction": float(g["wait"]),
                         "peak_mem_gb": float(g["peak"]) if g["peak"] else None})
    return rows, True


def row_name(row: dict) -> str:
    variant = "compiled" if row["compile"] else ("channels_last" if row["channels_last"] else "eager")
    return f"{row['model']} {row['spatial_dims']}D {row['size']}px C={row['channels']} {row['loader']} {variant}"


def goals(rows: list[dict], train: dict) -> dict:
    """Issue 19's targets for the H200, read off this run (only meaningful for a full CUDA run)."""
    def best(model: str) -> float | None:
        rates = [r["images_per_s"] for r in rows if r["model"] == model and r["spatial_dims"] == 2
                 and r["size"] == 224 and r["channels"] == 3]
        return max(rates, default=None)

    def worst_wait(wide: bool) -> float | None:
        waits = [r["data_wait_fraction"] for r in rows if r["spatial_dims"] == 2 and (r["channels"] >= 1000) == wide]
        return max(waits, default=None)

    ratios = sorted(r["engine_vs_plain"] for r in rows)
    checks = {"resnet50_224_images_per_s": (best("resnet50"), ">=", 4000),
              "resnet18_224_images_per_s": (best("resnet18"), ">=", 9000),
              "data_wait_2d_max": (worst_wait(False), "<=", 0.05),
              "data_wait_1000ch_max": (worst_wait(True), "<=", 0.10),
              "engine_vs_plain_median": (ratios[len(ratios) // 2] if ratios else None, ">=", 0.95),
              "brain_tumor_train_s": (train.get("seconds") if train.get("rc") == 0 else None, "<=", 120)}
    return {name: {"value": value, "goal": f"{op} {limit}",
                   "met": None if value is None else (value >= limit if op == ">=" else value <= limit)}
            for name, (value, op, limit) in checks.items()}


def junit_counts(path: Path) -> dict | None:
    if not path.is_file():
        return None
    import xml.etree.ElementTree as ET

    suites = ET.parse(path).getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} if suite is not None else None


def train_figures(run_dir: Path) -> dict:
    figures = {}
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        data = json.loads(metrics.read_text())
        figures.update(epochs=data.get("epochs"), best_epoch=data.get("best_epoch"))
        for split in ("val", "test", "test_deleaked"):
            if split in data:
                figures[f"{split}_accuracy"] = data[split].get("accuracy")
                figures[f"{split}_auc"] = data[split].get("auc", data[split].get("roc_auc"))
    report = run_dir / "data_report.json"
    if report.is_file():
        data = json.loads(report.read_text())
        figures.update({k: data.get(k) for k in ("train_files", "test_files", "test_deleaked")})
    return figures


def pack_run(run_dir: Path, target: Path) -> None:
    """The training run dir without its weights (45 MB each): configs, metrics, plots, logs."""
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(run_dir.rglob("*")):
            if path.is_file() and path.suffix not in (".pt", ".safetensors", ".pth"):
                tar.add(path, arcname=str(path.relative_to(run_dir.parent)))


def summarize(work: Path, out: Path, device: str, quick: bool, show: bool = False) -> None:
    stages = []
    table = work / "stages.tsv"
    for line in table.read_text().splitlines() if table.is_file() else []:
        name, rc, seconds, box = line.split("\t")
        stages.append({"stage": name, "rc": int(rc), "seconds": float(seconds), "box_s": int(box),
                       "timed_out": int(rc) in (124, 137), "log": f"{name}.log"})
    by_name = {s["stage"]: s for s in stages}
    versions = work / "versions.json"
    rows, partial = throughput_rows(work)
    train = {**by_name.get("train", {}), **train_figures(work / RECIPE)}
    marker = next(work.glob("data.json"), None)
    summary = {
        "suite": "bench/gpu_suite.sh (issue 19)", "date": date.today().isoformat(), "device": device, "quick": quick,
        "host": platform.node(), "work_dir": str(work), "stages": stages,
        "versions": json.loads(versions.read_text()) if versions.is_file() else None,
        "data": json.loads(marker.read_text()) if marker else None,
        "cuda_tests": junit_counts(work / "cuda_tests.xml"),
        "train": {k: train.get(k) for k in ("rc", "seconds", "timed_out", "epochs", "best_epoch", "val_accuracy",
                                            "test_accuracy", "test_auc", "test_deleaked_accuracy", "train_files",
                                            "test_files", "test_deleaked") if k in train},
        "throughput": {"partial": partial, "rows": {row_name(r): {k: r.get(k) for k in (
            "images_per_s", "plain_images_per_s", "engine_vs_plain", "data_wait_fraction", "peak_mem_gb")}
            for r in rows}},
        # CPU figures never stand in for GPU ones, and --quick runs are too short to mean anything.
        "goals": goals(rows, train) if device == "cuda" and not quick else None,
        "baselines": [{k: r.get(k) for k in ("recipe", "seed", "accuracy", "auc", "best_epoch", "seconds")}
                      for r in baseline_records(work)],
    }
    out.mkdir(parents=True, exist_ok=True)
    for name in ("install.log", "cuda_tests.log", "cuda_tests.xml", "train.log", "train_throughput.log",
                 "train_throughput.json", "baselines.log"):
        if (work / name).is_file():
            shutil.copy2(work / name, out / name)
    records = baseline_records(work)
    if records:  # one file for all of them (the device tool brings back few files): benchmarks.py --add-records
        (out / "baselines.json").write_text(json.dumps(
            {"suite": "bench/gpu_suite.sh --baselines (issue 17)", "device": device, "quick": quick,
             "records": records}, indent=1) + "\n")
    if (work / RECIPE).is_dir():
        pack_run(work / RECIPE, out / "train_run.tar.gz")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if show:  # the device tool returns the end of the output: the figures come back even if no file does
        for stage in stages:
            print(f"  {stage['stage']:<17} rc {stage['rc']:>4}  {stage['seconds']:7.1f} s  (box {stage['box_s']} s)")
        for key in ("versions", "cuda_tests", "train", "goals", "baselines"):
            print(f"  {key}: {json.dumps(summary[key])}")
        for name, row in summary["throughput"]["rows"].items():
            print(f"  {name}: {json.dumps(row)}")
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > OUT_FILE_LIMIT:
        print(f"warning: {len(files)} files in {out}; the device tool brings back only {OUT_FILE_LIMIT}",
              file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare-data")
    p.add_argument("--src", type=Path, required=True)
    p.add_argument("--dst", type=Path, required=True)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--recipe", default=RECIPE)
    p = sub.add_parser("travel-size")
    p.add_argument("--carry", type=Path, nargs="*", default=[])
    p = sub.add_parser("subset")
    p.add_argument("--src", type=Path, required=True)
    p.add_argument("--dst", type=Path, required=True)
    p.add_argument("--train", type=int, default=16)
    p.add_argument("--test", type=int, default=8)
    p = sub.add_parser("install")
    p.add_argument("--wheels", type=Path, required=True)
    p.add_argument("--site", type=Path, required=True)
    p.add_argument("--versions", type=Path, required=True)
    p = sub.add_parser("baselines")
    p.add_argument("--jobs", nargs="+", required=True, help="RECIPE:SEED ...")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--quick", action="store_true")
    p = sub.add_parser("summarize")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--print", action="store_true", help="print the figures too")
    args = parser.parse_args()
    if args.command == "prepare-data":
        prepare_data(args.src, args.dst, args.quality, args.recipe)
    elif args.command == "travel-size":
        return travel_size(args.carry)
    elif args.command == "subset":
        subset(args.src, args.dst, args.train, args.test)
    elif args.command == "install":
        return install(args.wheels, args.site, args.versions)
    elif args.command == "baselines":
        return run_baselines(args.jobs, args.work, args.device, args.quick)
    else:
        summarize(args.work, args.out, args.device, args.quick, args.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
