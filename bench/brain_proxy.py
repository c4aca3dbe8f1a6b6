"""Build the brain-tumour card's Training-only proxy as a data folder any recipe can train on.

In the brain-tumour set's Training split every glioma is a 512 x 512 figshare slice, while the tumours of other
sizes come from other sources. The proxy holds those other-source tumours out, with 40 gliomas and 40 no-tumour
images drawn by `random.Random(0).sample` from each class's sorted file list, and trains on the rest:

    OUT/brain-tumor-mri/Training/<class>/...   the remaining Training images
    OUT/brain-tumor-mri/Testing/<class>/...    the held-out images (the proxy's test split)

Files are hard links where the file system allows, else copies (the data folder refuses symlinks that leave it).
Train on it with `data.sources.brain_tumor.root=OUT/brain-tumor-mri` (or `data.root=` for the one-source data
config); the test split's meningioma and pituitary rows are then exactly the held-out other-source tumours.

    python bench/brain_proxy.py --data PATH/TO/brain-tumor-mri --out /tmp/proxy
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
from pathlib import Path

from PIL import Image

FIGSHARE_SIZE = (512, 512)
DRAWN = {"glioma_tumor": 40, "no_tumor": 40}
TUMOURS = ("glioma_tumor", "meningioma_tumor", "pituitary_tumor")


def held_out(training: Path) -> set[Path]:
    """The proxy's test images: other-size tumours, plus the seeded draws of `DRAWN`."""
    chosen: set[Path] = set()
    for folder in sorted(p for p in training.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        if folder.name in TUMOURS:
            for path in files:
                with Image.open(path) as image:
                    if image.size != FIGSHARE_SIZE:
                        chosen.add(path)
        if folder.name in DRAWN:
            rest = [p for p in files if p not in chosen]
            chosen.update(random.Random(0).sample(rest, DRAWN[folder.name]))
    return chosen


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def build(data: Path, out: Path) -> dict[str, dict[str, int]]:
    """Write the proxy folder under `out/brain-tumor-mri`; return the image counts per split and class."""
    training = data / "Training"
    test = held_out(training)
    root = out / "brain-tumor-mri"
    if root.exists():
        raise SystemExit(f"{root} exists; remove it or choose another --out")
    counts: dict[str, dict[str, int]] = {"Training": {}, "Testing": {}}
    for path in sorted(training.rglob("*")):
        if path.is_file():
            split = "Testing" if path in test else "Training"
            _link(path, root / split / path.relative_to(training))
            counts[split][path.parent.name] = counts[split].get(path.parent.name, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the brain-tumor-mri folder (holding Training/)")
    parser.add_argument("--out", type=Path, required=True, help="where to write brain-tumor-mri/ of the proxy")
    args = parser.parse_args()
    for split, per_class in build(args.data, args.out).items():
        print(f"{split}: {sum(per_class.values())} images  " + ", ".join(f"{k} {v}" for k, v in sorted(per_class.items())))


if __name__ == "__main__":
    main()
