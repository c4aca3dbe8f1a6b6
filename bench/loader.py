"""Loader throughput on 1000 x 256 x 256 int16 slice stacks: prepared cache vs sources vs memcpy vs MONAI.

The bench writes synthetic stacks (fixed seed) once into a temp folder as a prepared cache, .npy, .nii,
.nii.gz, a DICOM series (one file per slice) and a multipage TIFF, then measures, side by side in one run:

- memcpy: the same bytes copied from memory (one thread, and through the same DataLoader as the cache);
- each format through a DataLoader (same workers, batch, seeded sampler): read + canonical 2.5D layout
  (depth -> channels) + the 2.5D augmentations (flip, rotate90, Gaussian noise, normalize; medzoo's
  multichannel transforms) + collate;
- MONAI's reference pipeline on the .nii files: LoadImage + EnsureChannelFirst + ScaleIntensity + RandFlip +
  RandRotate90 + RandGaussianNoise in a monai.data.Dataset + DataLoader with the same workers;
- reading alone, one process: medzoo's reader vs MONAI's LoadImage on the same .nii files and DICOM folders.

Ratios (JSON "ratios"): cache_vs_memcpy is a cache item read (np.load mmap + copy) against a copy of the same
bytes from memory, both on one thread (the loader-level pair, which adds collate into shared memory, is in
"extra_ratios"); cache_aug_vs_monai_pipeline compares samples/s of the two DataLoaders; the *_loadimage
ratios are MONAI LoadImage's seconds per file over medzoo's reader's, the same files, one process.

GB/s counts the stored int16 bytes of a stack (131 MB) per sample. Files are timed from a warm page cache
(freshly written, or read once before timing): the figures measure decoding and copying, not the disk.

    python bench/loader.py --quick --json OUT.json   # 4 stacks, one timed epoch: ~2 min on 2 cores
    python bench/loader.py --json OUT.json           # 8 stacks, 3 timed epochs, MONAI on DICOM too
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
import torch
from torch.utils.data import DataLoader, Dataset

from medzoo.datasets.base import SeededSampler
from medzoo.datasets.prepared import PreparedDataset, canonical_layout, prepare
from medzoo.datasets.readers import read_volume
from medzoo.datasets.shm import loader_settings
from medzoo.testing import write_dicom_series
from medzoo.transforms import multichannel as mc

SEED = 0
GOALS = {"cache_vs_memcpy": 0.5, "cache_aug_vs_monai_pipeline": 10.0, "nii_vs_monai_loadimage": 2.0,
         "dicom_vs_monai_loadimage": 2.0}
FORMATS = ("npy", "nii", "nii.gz", "dicom", "tiff")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- synthetic data

def synthetic_stack(index: int, depth: int, size: int) -> np.ndarray:
    """An MR-like int16 stack: a smooth head-shaped field that changes with depth, plus noise (gzip ~2x)."""
    rng = np.random.default_rng([SEED, index])
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size - 0.5
    head = np.clip(1.0 - (yy ** 2 + xx ** 2) / 0.18, 0.0, None) * 2000.0
    scale = 0.6 + 0.4 * np.sin(np.linspace(0.0, np.pi, depth, dtype=np.float32))
    out = (scale[:, None, None] * head[None]).astype(np.int16)
    out += rng.integers(0, 64, out.shape, dtype=np.int16)
    return out


def write_dicom(folder: Path, stack: np.ndarray) -> None:
    """One uncompressed MR file per slice, 1 mm apart."""
    write_dicom_series(folder, stack)


def nifti_image(stack: np.ndarray) -> nib.Nifti1Image:
    """(D, H, W) C-order is (x, y, z) Fortran-order: NIfTI's storage order, RAS+ with an identity affine."""
    return nib.Nifti1Image(stack.T, np.eye(4))


def write_nifti_gz(path: Path, stack: np.ndarray) -> None:
    # gzip level 1 (nibabel's default level) in one call: half the time of nib.save on this data
    path.write_bytes(gzip.compress(nifti_image(stack).to_bytes(), compresslevel=1, mtime=0))


WRITERS: dict[str, Callable[[Path, np.ndarray], None]] = {
    "npy": lambda path, stack: np.save(path, stack),
    "nii": lambda path, stack: nib.save(nifti_image(stack), path),
    "nii.gz": write_nifti_gz,
    "dicom": write_dicom,
    "tiff": lambda path, stack: tifffile.imwrite(path, stack),
}
FOLDERS = {"npy": "npy", "nii": "nii", "nii.gz": "niigz", "dicom": "dicom", "tiff": "tiff"}
SUFFIXES = {"npy": ".npy", "nii": ".nii", "nii.gz": ".nii.gz", "dicom": "", "tiff": ".tif"}


def write_sources(root: Path, stacks: int, depth: int, size: int) -> tuple[dict[str, list[Path]], bool]:
    """Every format of every stack under `root`, and whether they were written now (not reused)."""
    spec = {"stacks": stacks, "depth": depth, "size": size, "seed": SEED, "version": 2}
    done = root / "done.json"
    paths = {fmt: [root / FOLDERS[fmt] / f"stack{i:02d}{SUFFIXES[fmt]}" for i in range(stacks)]
             for fmt in FORMATS}
    if done.is_file() and json.loads(done.read_text()) == spec:
        log(f"reusing the sources in {root}")
        return paths, False
    for folder in (*FOLDERS.values(), "cache"):  # only what this bench writes, never the rest of --workdir
        shutil.rmtree(root / folder, ignore_errors=True)
        (root / folder).mkdir(parents=True)
    spent = dict.fromkeys(FORMATS, 0.0)
    for index in range(stacks):
        stack = synthetic_stack(index, depth, size)
        for fmt, write in WRITERS.items():
            start = time.perf_counter()
            write(paths[fmt][index], stack)
            spent[fmt] += time.perf_counter() - start
    log("wrote " + ", ".join(f"{fmt} {seconds:.1f} s" for fmt, seconds in spent.items()))
    done.write_text(json.dumps(spec))
    return paths, True


def warm_page_cache(paths: Iterable[Path]) -> None:
    """Read every byte once, so that reused files are timed from memory like freshly written ones."""
    for path in paths:
        for file in sorted(path.iterdir()) if path.is_dir() else [path]:
            with open(file, "rb") as handle:
                while handle.read(16 * 2**20):
                    pass


# ----------------------------------------------------------------------------- datasets

def augmentations(noise: bool = True) -> mc.Compose:
    """The 2.5D recipe's per-sample augmentations, as in MONAI's reference below (noise always on)."""
    steps = [mc.HorizontalFlip(p=0.5), mc.RandomRotate90(p=0.5)]
    steps += [mc.GaussianNoise(std_range=(0.1, 0.1), p=1.0)] if noise else []
    return mc.Compose([*steps, mc.Normalize(mean=0.5, std=0.5)])


class SourceDataset(Dataset):
    """Source files read with `read_volume` on every access, laid out as 2.5D stacks, then augmented."""

    def __init__(self, paths: list[Path], transform: mc.Compose | None):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        array = canonical_layout(read_volume(self.paths[index]).array, "slices", self.paths[index])
        if self.transform is None:
            return torch.from_numpy(np.array(array)), 0
        self.transform.set_seed(seed)
        return torch.from_numpy(self.transform(array)), 0


class MemoryDataset(Dataset):
    """The same stacks already in memory: each access is one copy (the floor for any loader)."""

    def __init__(self, stacks: list[np.ndarray]):
        self.stacks = stacks

    def __len__(self) -> int:
        return len(self.stacks)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.stacks[item[0]])), 0


def monai_pipeline(paths: list[Path], settings: dict, batch: int):
    """MONAI's reference: LoadImage, EnsureChannelFirst, ScaleIntensity, RandFlip, RandRotate90, noise."""
    from monai.data import DataLoader as MonaiLoader
    from monai.data import Dataset as MonaiDataset
    from monai.transforms import (
        Compose,
        EnsureChannelFirst,
        LoadImage,
        RandFlip,
        RandGaussianNoise,
        RandRotate90,
        ScaleIntensity,
    )

    transform = Compose([LoadImage(image_only=True), EnsureChannelFirst(), ScaleIntensity(),
                         RandFlip(prob=0.5, spatial_axis=0), RandRotate90(prob=0.5, spatial_axes=(0, 1)),
                         RandGaussianNoise(prob=1.0, std=0.1)])
    transform.set_random_state(seed=SEED)
    return MonaiLoader(MonaiDataset([str(p) for p in paths], transform), batch_size=batch, **settings)


# ----------------------------------------------------------------------------- timing

def _mapped(array: np.ndarray) -> bool:
    base = array
    while base is not None:
        if isinstance(base, np.memmap) or type(base).__name__ == "mmap":
            return True
        base = getattr(base, "base", None)
    return False


def ours_read(path: Path) -> np.ndarray:
    """medzoo's reader, with a memory-mapped result copied into memory so that every byte is really read."""
    array = read_volume(path).array
    return np.array(array) if _mapped(array) else array


def time_calls(function: Callable[[Path], object], paths: list[Path], repeats: int) -> float:
    """Best-of-`repeats` seconds per call over `paths`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            function(path)
        best = min(best, (time.perf_counter() - start) / len(paths))
    return best


def time_loader(loader: Iterable, epochs: int, warmup: int,
                sampler: SeededSampler | None = None) -> tuple[float, int]:
    """(seconds, samples) of `epochs` timed epochs after `warmup` untimed ones (worker start, first touch)."""
    count, seconds = 0, 0.0
    for epoch in range(warmup + epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        start = time.perf_counter()
        seen = 0
        for batch in loader:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            seen += len(images)
        if epoch >= warmup:
            seconds += time.perf_counter() - start
            count += seen
    return seconds, count


def best_rate(function: Callable[[], object], calls: int, repeats: int) -> tuple[float, int]:
    """(seconds, calls) of the fastest of `repeats` rounds of `calls` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, time.perf_counter() - start)
    return best, calls


def row(name: str, seconds: float, samples: int, sample_bytes: int, what: str) -> dict:
    rate = samples / seconds if seconds else float("inf")
    return {"name": name, "samples_per_s": round(rate, 3), "gb_per_s": round(rate * sample_bytes / 1e9, 3),
            "seconds": round(seconds, 3), "samples": samples, "what": what}


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(SEED)
    stacks = args.stacks or (4 if args.quick else 8)
    epochs, repeats = (1, 1) if args.quick else (3, 2)
    reader_stacks = min(stacks, 2) if args.quick else stacks
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="medzoo-bench-loader-"))
    started = time.perf_counter()
    paths, fresh = write_sources(workdir, stacks, args.depth, args.size)
    sample_bytes = args.depth * args.size * args.size * 2
    start = time.perf_counter()
    prepare([(p, "x") for p in paths["npy"]], workdir / "cache", layout="slices", progress=False)
    prepare_seconds = time.perf_counter() - start
    os.sync()  # dirty pages being written back would slow whichever row happens to run then
    if not fresh:
        warm_page_cache(p for fmt in FORMATS for p in paths[fmt])
    # the workers hand over float32 after augmentation: twice the stored int16
    settings = loader_settings(sample_bytes * 2, args.batch, args.workers, "cpu")
    log(f"loader settings: {settings}; {stacks} stacks of {args.depth}x{args.size}x{args.size} int16, "
        f"batch {args.batch}, {epochs} timed epoch(s)")
    rows = []

    # One thread, no loader: what reading the cache costs next to copying the same bytes from memory.
    memory = [np.load(p) for p in paths["npy"]]
    cache = PreparedDataset(workdir / "cache", verify="size")
    turn = iter(range(10**9))
    seconds, calls = best_rate(lambda: np.array(memory[next(turn) % stacks]), stacks, 5)
    rows.append(row("memcpy (1 thread)", seconds, calls, sample_bytes, "np.array copy of an in-memory stack"))
    seconds, calls = best_rate(lambda: cache[next(turn) % stacks], stacks, 5)
    rows.append(row("cache read (1 thread)", seconds, calls, sample_bytes,
                    "PreparedDataset item, no transform: np.load(mmap) + copy"))

    def loader_row(name: str, dataset: Dataset, what: str, cheap: bool = False) -> dict:
        sampler = SeededSampler(len(dataset), shuffle=False, seed=SEED)
        loader = DataLoader(dataset, batch_size=args.batch, sampler=sampler, **settings)
        # Cheap rows (under a second an epoch) get a warm-up and 3+ timed epochs even in --quick, as their
        # figures are otherwise mostly noise; the others pay worker start-up (~0.1 s) in --quick.
        warmup, timed = (1, max(3, epochs)) if cheap else (int(not args.quick), epochs)
        seconds, count = time_loader(loader, timed, warmup, sampler)
        del loader
        log(f"  {name}: {count / seconds:.2f} samples/s")
        return row(name, seconds, count, sample_bytes, what)

    aug = "read + 2.5D layout + flip/rot90/noise/normalize + collate"
    rows.append(loader_row("cache", cache, "prepared cache, no augmentation + collate", True))
    rows.append(loader_row("memcpy loader", MemoryDataset(memory), "in-memory stack copy + collate", True))
    rows.append(loader_row("cache + aug", PreparedDataset(workdir / "cache", transform=augmentations()),
                           "prepared cache + flip/rot90/noise/normalize + collate"))
    rows.append(loader_row("cache + aug without noise",
                           PreparedDataset(workdir / "cache", transform=augmentations(noise=False)),
                           "prepared cache + flip/rot90/normalize + collate", True))
    for fmt in FORMATS:
        rows.append(loader_row(f"{fmt} + aug", SourceDataset(paths[fmt], augmentations()), aug))
    monai_formats = ("nii",) if args.quick else ("nii", "dicom")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in monai_formats:
            loader = monai_pipeline(paths[fmt], settings, args.batch)
            seconds, count = time_loader(loader, epochs, int(not args.quick))
            del loader
            log(f"  MONAI pipeline {fmt}: {count / seconds:.2f} samples/s")
            rows.append(row(f"MONAI pipeline {fmt}", seconds, count, sample_bytes,
                            "LoadImage+EnsureChannelFirst+ScaleIntensity+RandFlip+RandRotate90+RandGaussianNoise"))

        from monai.transforms import LoadImage

        readers = {"nii": {}, "dicom": {"reader": "PydicomReader"}}
        if not args.quick:
            readers["nii.gz"] = {}
        reads = {}
        for fmt, kwargs in readers.items():
            chosen = paths[fmt][:reader_stacks]
            monai_default = LoadImage(image_only=True, **kwargs)
            monai_keep = LoadImage(image_only=True, dtype=None, **kwargs)
            reads[fmt] = {"ours": time_calls(ours_read, chosen, repeats),
                          "monai": time_calls(monai_default, chosen, repeats),
                          "monai_keep_dtype": time_calls(monai_keep, chosen, repeats)}
            for who, seconds in reads[fmt].items():
                note = {"ours": "medzoo read_volume", "monai": "MONAI LoadImage (default: float32)",
                        "monai_keep_dtype": "MONAI LoadImage(dtype=None)"}[who]
                rows.append(row(f"read {fmt}: {who}", seconds, 1, sample_bytes, f"{note}, file to memory"))
            log(f"  read {fmt}: " + ", ".join(f"{k} {v:.3f} s" for k, v in reads[fmt].items()))

    rate = {r["name"]: r["samples_per_s"] for r in rows}
    ratios = {
        "cache_vs_memcpy": rate["cache read (1 thread)"] / rate["memcpy (1 thread)"],
        "cache_aug_vs_monai_pipeline": rate["cache + aug"] / rate["MONAI pipeline nii"],
        "nii_vs_monai_loadimage": reads["nii"]["monai"] / reads["nii"]["ours"],
        "dicom_vs_monai_loadimage": reads["dicom"]["monai"] / reads["dicom"]["ours"],
    }
    extra = {
        "cache_loader_vs_memcpy_loader": rate["cache"] / rate["memcpy loader"],
        "cache_aug_without_noise_vs_monai_pipeline":
            rate["cache + aug without noise"] / rate["MONAI pipeline nii"],
        "nii_aug_vs_monai_pipeline": rate["nii + aug"] / rate["MONAI pipeline nii"],
        "nii_vs_monai_loadimage_keep_dtype": reads["nii"]["monai_keep_dtype"] / reads["nii"]["ours"],
        "dicom_vs_monai_loadimage_keep_dtype": reads["dicom"]["monai_keep_dtype"] / reads["dicom"]["ours"],
        "cache_aug_vs_nii_aug": rate["cache + aug"] / rate["nii + aug"],
        "cache_aug_vs_dicom_aug": rate["cache + aug"] / rate["dicom + aug"],
    }
    if "nii.gz" in reads:
        extra["niigz_vs_monai_loadimage"] = reads["nii.gz"]["monai"] / reads["nii.gz"]["ours"]
    if "MONAI pipeline dicom" in rate:
        extra["cache_aug_vs_monai_pipeline_dicom"] = rate["cache + aug"] / rate["MONAI pipeline dicom"]
    result = {
        "bench": "loader", "date": date.today().isoformat(), "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "numpy": np.__version__},
        "config": {"stacks": stacks, "shape": [args.depth, args.size, args.size], "dtype": "int16",
                   "sample_bytes": sample_bytes, "batch": args.batch, "epochs": epochs, "repeats": repeats,
                   "reader_stacks": reader_stacks, "loader": settings, "seed": SEED,
                   "sources_written": fresh},
        "prepare_seconds": round(prepare_seconds, 2),
        "rows": rows,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "extra_ratios": {k: round(v, 3) for k, v in extra.items()},
        "goals": {k: {"goal": goal, "value": round(ratios[k], 3), "met": ratios[k] >= goal}
                  for k, goal in GOALS.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def print_table(result: dict) -> None:
    print(f"{'row':32s} {'samples/s':>10s} {'GB/s':>8s}  what")
    for r in result["rows"]:
        print(f"{r['name']:32s} {r['samples_per_s']:10.2f} {r['gb_per_s']:8.3f}  {r['what']}")
    print()
    for name, goal in result["goals"].items():
        verdict = "met" if goal["met"] else "MISSED"
        print(f"{name:36s} {goal['value']:8.2f}   goal >= {goal['goal']:g}: {verdict}")
    for name, value in result["extra_ratios"].items():
        print(f"{name:36s} {value:8.2f}")
    print(f"\n{result['seconds']} s in all (prepare: {result['prepare_seconds']} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 stacks, 1 timed epoch (~2-3 min on 2 cores)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--stacks", type=int, default=None, help="number of stacks (default 4 quick, 8 full)")
    parser.add_argument("--depth", type=int, default=1000, help="slices per stack")
    parser.add_argument("--size", type=int, default=256, help="height and width")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--workdir", help="keep the synthetic files here and reuse them on the next run")
    args = parser.parse_args()
    result = run(args)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
