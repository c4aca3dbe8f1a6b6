"""Measure the label-error search: write a MedMNIST file as an image folder with a known share of labels flipped,
audit it, and score label_issues.csv against the flips.

    python -m medzoo.audit.label_noise FILE.npz OUT [--fraction 0.1] [--seed 0] [--limit N] [--classes a,b]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from medzoo.datasets.readers.medmnist_file import read_medmnist
from medzoo.errors import DataError

SPLITS = {"train": "Training", "val": "Training", "test": "Testing"}  # MedMNIST split -> audit folder


def write_noisy_folder(npz: Path, root: Path, fraction: float = 0.1, seed: int = 0, limit: int | None = None,
                       classes: Sequence[str] | None = None) -> set[str]:
    """Write a single-label 2D MedMNIST file as `Training/<class>/*.png` (train + val) and `Testing/<class>/*.png`
    (test), with `fraction` of the images (drawn with `seed`, over both splits) filed under a random other class;
    `limit` keeps a random subset of that many images first. Returns the keys (`split/class/file`) of the flipped
    images."""
    arrays = read_medmnist(Path(npz))  # sizes checked before reading; multi-label files refused
    images = np.concatenate([arrays[s][0] for s in SPLITS])
    labels = np.concatenate([arrays[s][1] for s in SPLITS])
    origin = np.concatenate([[s] * len(arrays[s][1]) for s in SPLITS])
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise DataError(f"{npz}: images of shape {images.shape} are not 2D grey or RGB images.")
    count = int(labels.max()) + 1
    names = list(classes) if classes else [f"class_{k}" for k in range(count)]
    if len(names) != count:
        raise DataError(f"{len(names)} class names given for {count} classes in {npz}.")
    rng = np.random.default_rng(seed)
    number = np.arange(len(labels))  # the row in the MedMNIST file, kept in the file name
    if limit is not None and limit < len(labels):
        keep = np.sort(rng.choice(len(labels), limit, replace=False))
        images, labels, origin, number = images[keep], labels[keep], origin[keep], number[keep]
    flipped = rng.choice(len(labels), round(fraction * len(labels)), replace=False)
    given = labels.copy()
    given[flipped] = (labels[flipped] + rng.integers(1, count, len(flipped))) % count
    if root.exists():
        shutil.rmtree(root)
    keys = []
    for image, label, split, row in zip(images, given, origin, number):
        folder = root / SPLITS[split] / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{split}_{row:05d}.png"
        Image.fromarray(image).save(folder / name)
        keys.append(f"{SPLITS[split]}/{names[label]}/{name}")
    return {keys[i] for i in flipped}


def score(label_issues_csv: Path, flipped: set[str]) -> dict[str, float]:
    """Precision and recall of the flipped images among the rows of label_issues.csv."""
    with open(label_issues_csv, newline="") as handle:
        flagged = {row["path"] for row in csv.DictReader(handle)}
    hits = len(flagged & flipped)
    return {"flagged": len(flagged), "flipped": len(flipped), "true_positives": hits,
            "precision": round(hits / len(flagged), 4) if flagged else 0.0,
            "recall": round(hits / len(flipped), 4) if flipped else 0.0}


def main(argv: Sequence[str] | None = None) -> dict:
    """Write the noisy folder, run `medzoo audit audit.label_issues=true` on it, print and return the scores."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--classes", default=None, help="comma-separated class names (default class_0, class_1...)")
    parser.add_argument("overrides", nargs="*", help="more audit settings, e.g. audit.label_features=hog")
    args = parser.parse_intermixed_args(argv)
    root, run = args.out / "data", args.out / "run"
    flipped = write_noisy_folder(args.npz, root, args.fraction, args.seed, args.limit,
                                 args.classes.split(",") if args.classes else None)
    medzoo = Path(sys.executable).with_name("medzoo")
    command = [str(medzoo) if medzoo.exists() else "medzoo", "audit", "data=brain_tumor",
               f"data.name={args.npz.stem}_flipped", f"data.root={root}", "audit.label_issues=true",
               f"hydra.run.dir={run}", *args.overrides]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    result = {**score(run / "label_issues.csv", flipped), "seconds": round(time.perf_counter() - started, 1),
              "command": " ".join(command[1:])}
    summary = json.loads((run / "summary.json").read_text())["label_issues"]
    result.update({k: summary[k] for k in ("checked", "features", "out_of_sample_accuracy") if k in summary})
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
