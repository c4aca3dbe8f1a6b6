"""Loader throughput on 1000 x 256 x 256 int16 slice stacks: prepared cache vs sources vs memcpy vs MONAI.

The bench writes synthetic stacks (fixed seed) once into a temp folder as a prepared cache, .npy, .nii,
.nii.gz, a DICOM series (one file per slice) and a multipage TIFF, then measures, side by side in one run:

- memcpy: the same bytes copied from memory (one thread, and through the same DataLoader as the cache);
- each format through medzoo's `make_loader` (its default workers, prefetch, /dev/shm check and batch ring,
  in whose slots the prepared cache's samples are built; seeded sampler): read + canonical 2.5D layout (depth -> channels) + the 2.5D augmentations of
  `medzoo/conf/transforms/stack_2d5_aug.yaml` (the list a recipe with `transforms=stack_2d5_aug` runs:
  flip, rotate90, min-max scaling to [0, 1], unclipped Gaussian noise with std ~ U(0, 0.1)) + collate;
- MONAI's reference pipeline on the .nii files: LoadImage + EnsureChannelFirst + ScaleIntensity + RandFlip +
  RandRotate90 + RandGaussianNoise(std=0.1) in a monai.data.Dataset + DataLoader with the same workers,
  prefetch and persistent workers as medzoo's loader;
- reading alone, one process: medzoo's reader vs MONAI's LoadImage on the same .nii files and DICOM folders.

Ratios (JSON "ratios"): cache_vs_memcpy is a cache item read (np.load mmap + copy) against a copy of the same
bytes from memory, both on one thread (the loader-level pair, which adds collate into shared memory, is in
"extra_ratios"); cache_aug_vs_monai_pipeline compares samples/s of the two DataLoaders, timed in alternating
epochs (medzoo, MONAI, medzoo without its noise step, medzoo without its batch ring, medzoo, ...) so that other work on the machine weighs
on all alike; the *_loadimage
ratios are MONAI LoadImage's seconds per file over medzoo's reader's, the same files, one process, each the best
of 2 passes (3 in --quick, which reads 2 stacks a pass) with the readers taking turns. Loader
rows also give the CPU seconds per sample of the training process and its workers together (Linux /proc),
a figure that other processes on the machine disturb much less than wall time.

GB/s counts the stored int16 bytes of a stack (131 MB) per sample. Files are timed from a warm page cache
(freshly written, or read once before timing): the figures measure decoding and copying, not the disk.

    python bench/loader.py --quick --json OUT.json   # 2 alternating rounds, 4 stacks of the slow formats: ~3 min
    python bench/loader.py --json OUT.json           # 8 stacks, 3 rounds / epochs, MONAI on DICOM too
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
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

import medzoo.conf
from medzoo.datasets.dataset import ArrayDataset
from medzoo.datasets.prepared_store import PreparedStore, prepare
from medzoo.datasets.readers import read_volume
from medzoo.loading.loader import make_loader
from medzoo.transforms.layout import canonical_layout
from medzoo.transforms.spec import TransformSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/ holds the file builders
from tests.dicom_builders import write_dicom_series  # noqa: E402

SEED = 0
GOALS = {"cache_vs_memcpy": 0.5, "cache_aug_vs_monai_pipeline": 10.0, "nii_vs_monai_loadimage": 2.0,
         "dicom_vs_monai_loadimage": 2.0}
FORMATS = ("npy", "nii", "nii.gz", "dicom", "tiff")
HEADLINE_FORMATS = ("npy", "nii")  # the cache is prepared from the .npy files; MONAI reads the .nii ones
AUG_CONFIG = Path(medzoo.conf.__file__).parent / "transforms" / "stack_2d5_aug.yaml"
LOADER_KEYS = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor")


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


def write_sources(root: Path, counts: dict[str, int], depth: int, size: int) -> tuple[dict[str, list[Path]], bool]:
    """The first `counts[fmt]` stacks in each format under `root`, and whether they were written now (not
    reused)."""
    spec = {"stacks": counts, "depth": depth, "size": size, "seed": SEED, "version": 3}
    done = root / "done.json"
    paths = {fmt: [root / FOLDERS[fmt] / f"stack{i:02d}{SUFFIXES[fmt]}" for i in range(counts[fmt])]
             for fmt in FORMATS}
    if done.is_file() and json.loads(done.read_text()) == spec:
        log(f"reusing the sources in {root}")
        return paths, False
    for folder in (*FOLDERS.values(), "cache"):  # only what this bench writes, never the rest of --workdir
        shutil.rmtree(root / folder, ignore_errors=True)
        (root / folder).mkdir(parents=True)
    spent = dict.fromkeys(FORMATS, 0.0)
    for index in range(max(counts.values())):
        stack = synthetic_stack(index, depth, size)
        for fmt, write in WRITERS.items():
            if index >= counts[fmt]:
                continue
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

def augmentations(noise: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """The 2.5D per-sample pipeline of `transforms=stack_2d5_aug`, built as the engine builds it.

    noise=False leaves out its GaussianNoise step: a diagnostic row that shows what the noise costs.
    """
    cfg = OmegaConf.to_container(OmegaConf.load(AUG_CONFIG), resolve=True)
    if not noise:
        cfg["train"] = [step for step in cfg["train"] if not step["_target_"].endswith(".GaussianNoise")]
    return TransformSpec.from_config(cfg).pipeline("train")


class SourceDataset(Dataset):
    """Source files read with `read_volume` on every access, laid out as 2.5D stacks, then augmented."""

    def __init__(self, paths: list[Path], transform: Callable[[np.ndarray], np.ndarray] | None):
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
    """MONAI's reference: LoadImage, EnsureChannelFirst, ScaleIntensity, RandFlip, RandRotate90, noise.

    `settings` are the DataLoader keywords of medzoo's loader (workers, prefetch, persistent workers).
    """
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


def time_calls(functions: dict[str, Callable[[Path], object]], paths: list[Path], repeats: int) -> dict[str, float]:
    """Best-of-`repeats` seconds per call over `paths` for each function, after one untimed call of each
    (imports, first-use set-up); the functions take turns in each repeat, so that a slow spell of the machine
    falls on all of them."""
    for function in functions.values():
        function(paths[0])
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            for path in paths:
                function(path)
            best[name] = min(best[name], (time.perf_counter() - start) / len(paths))
    return best


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _worker_pids(loader: Iterable) -> list[int]:
    # DataLoader keeps its persistent worker processes on its iterator (a private attribute: read only)
    workers = getattr(getattr(loader, "_iterator", None), "_workers", None) or []
    return [worker.pid for worker in workers if worker.pid]


def _loader_cpu(loader: Iterable) -> float | None:
    """CPU seconds used so far by this process (all its threads) and the loader's live workers."""
    seconds = [_process_cpu(pid) for pid in (os.getpid(), *_worker_pids(loader))]
    return None if None in seconds else sum(seconds)


def run_epoch(loader: Iterable, epoch: int) -> tuple[float, int, float | None]:
    """(wall seconds, samples, CPU seconds of this process and the loader's workers) of one epoch.

    Workers started during the epoch count their whole life so far, which belongs to it.
    """
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    cpu_before, start = _loader_cpu(loader), time.perf_counter()
    seen = 0
    for batch in loader:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        seen += len(images)
    seconds, cpu_after = time.perf_counter() - start, _loader_cpu(loader)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return seconds, seen, cpu


def time_loader(loader: Iterable, epochs: int, warmup: int) -> tuple[float, int, float | None]:
    """(seconds, samples, CPU seconds) of `epochs` timed epochs after `warmup` untimed ones."""
    count, seconds, cpu = 0, 0.0, 0.0
    for epoch in range(warmup + epochs):
        wall, seen, used = run_epoch(loader, epoch)
        if epoch >= warmup:
            seconds, count = seconds + wall, count + seen
            cpu = None if cpu is None or used is None else cpu + used
    return seconds, count, cpu


def alternate(loaders: dict[str, Iterable], rounds: int, warmup: int) -> dict[str, dict]:
    """One epoch of each loader per round, in turn (A, B, A, B, ...), after `warmup` untimed rounds.

    Work that other processes put on the machine changes over minutes; alternating puts it on both sides
    alike, where timing all epochs of A and then all of B would charge it to whichever ran at the time.
    """
    totals = {name: {"seconds": 0.0, "samples": 0, "cpu": 0.0, "round_rates": []} for name in loaders}
    for index in range(warmup + rounds):
        for name, loader in loaders.items():
            wall, seen, used = run_epoch(loader, index)
            if index < warmup:
                continue
            total = totals[name]
            total["seconds"] += wall
            total["samples"] += seen
            total["cpu"] = None if total["cpu"] is None or used is None else total["cpu"] + used
            total["round_rates"].append(seen / wall)
            log(f"  round {index - warmup + 1}/{rounds} {name}: {seen / wall:.2f} samples/s")
    return totals


def best_rate(function: Callable[[], object], calls: int, repeats: int) -> tuple[float, int]:
    """(seconds, calls) of the fastest of `repeats` rounds of `calls` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, time.perf_counter() - start)
    return best, calls


def into_new_shm(source: torch.Tensor) -> torch.Tensor:
    """What default_collate does with a sample in a worker: a new /dev/shm storage, the sample stacked in."""
    storage = source._typed_storage()._new_shared(source.numel(), device=source.device)
    out = source.new(storage).resize_(1, *source.shape)
    return torch.stack([source], 0, out=out)


def into_new_memory(source: np.ndarray) -> np.ndarray:
    """The same copy into new private memory (NumPy asks for huge pages for large arrays)."""
    out = np.empty(source.shape, source.dtype)
    np.copyto(out, source)
    return out


def handover_rows(sample: np.ndarray) -> list[dict]:
    """What handing a float32 sample to the training process costs a worker, whatever made the sample."""
    seconds, calls = best_rate(lambda: into_new_shm(torch.from_numpy(sample)), 2, 3)
    shared = row("float32 into new /dev/shm", seconds, calls, sample.nbytes,
                 "float32 sample stacked into a new shared-memory batch, as collate does in a worker")
    slot = torch.empty((1, *sample.shape)).share_memory_()
    seconds, calls = best_rate(lambda: torch.stack([torch.from_numpy(sample)], 0, out=slot), 2, 3)
    reused = row("float32 into reused /dev/shm", seconds, calls, sample.nbytes,
                 "the same stack into a shared slot written before (medzoo's batch ring)")
    seconds, calls = best_rate(lambda: into_new_memory(sample), 2, 3)
    private = row("float32 into new memory", seconds, calls, sample.nbytes,
                  "the same copy into new private memory (huge pages)")
    seconds = after_pause(lambda: into_new_memory(sample), PAUSE_SECONDS, 2)
    paused = row(f"float32 into new memory, {PAUSE_SECONDS:g} s idle", seconds, 1, sample.nbytes,
                 f"the same, each copy after {PAUSE_SECONDS:g} s with that memory freed (a VM may hand it back)")
    return [shared, reused, private, paused]


def after_pause(function: Callable[[], object], pause: float, repeats: int) -> float:
    """Best seconds of `function()` called `repeats` times, each after `pause` seconds of sleep.

    A virtual machine with free page reporting (virtio-balloon) hands memory that stayed free for a few
    seconds back to its host, and the next first touch of it faults through the host: what a sample
    allocated afresh pays after any pause, such as a loader's workers idle between epochs.
    """
    best = float("inf")
    for _ in range(repeats):
        time.sleep(pause)
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def row(name: str, seconds: float, samples: int, sample_bytes: int, what: str,
        cpu: float | None = None) -> dict:
    rate = samples / seconds if seconds else float("inf")
    out = {"name": name, "samples_per_s": round(rate, 3), "gb_per_s": round(rate * sample_bytes / 1e9, 3),
           "seconds": round(seconds, 3), "samples": samples, "what": what}
    if cpu is not None and samples:
        out["cpu_s_per_sample"] = round(cpu / samples, 4)
    return out


def machine() -> dict:
    """CPU, niceness, load and the versions that the figures depend on."""
    import cv2
    import monai
    import pydicom

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        cpuinfo = []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                 platform.processor())
    return {"cpu": model, "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "nice": os.nice(0),
            "load_average_1_5_15_min": [round(v, 2) for v in os.getloadavg()],
            "torch": torch.__version__, "numpy": np.__version__, "monai": monai.__version__,
            "opencv": cv2.__version__, "nibabel": nib.__version__, "pydicom": pydicom.__version__,
            "tifffile": tifffile.__version__}


PAUSE_SECONDS = 3.0  # idle time before the "after a pause" row: long enough for free page reporting
CACHE_AUG = "prepared cache + stack_2d5_aug (flip/rot90/min-max/noise) + collate"
NO_NOISE = "cache + aug without noise"
NEW_SEGMENTS = "cache + aug without batch ring"
MONAI_AUG = "LoadImage+EnsureChannelFirst+ScaleIntensity+RandFlip+RandRotate90+RandGaussianNoise"


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(SEED)
    # The headline pair (the cache, prepared from the .npy files, vs MONAI on the .nii files) gets 8 stacks in
    # both modes: with 4, each worker made one batch an epoch, and the figure timed mostly an epoch's start.
    # --quick writes 4 stacks of the formats that are slow to write.
    stacks = args.stacks or 8
    counts = {fmt: stacks if fmt in HEADLINE_FORMATS or not args.quick else min(stacks, 4) for fmt in FORMATS}
    epochs, repeats = (1, 1) if args.quick else (3, 2)
    read_repeats = 3 if args.quick else 2  # quick reads 2 stacks a pass: 3 passes, still seconds
    rounds, round_warmup = (2, 1) if args.quick else (3, 1)
    reader_stacks = min(stacks, 2) if args.quick else stacks
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="medzoo-bench-loader-"))
    started, machine_before = time.perf_counter(), machine()
    paths, fresh = write_sources(workdir, counts, args.depth, args.size)
    sample_bytes = args.depth * args.size * args.size * 2
    start = time.perf_counter()
    prepare([(p, "x") for p in paths["npy"]], workdir / "cache", layout="slices", progress=False)
    prepare_seconds = time.perf_counter() - start
    os.sync()  # dirty pages being written back would slow whichever row happens to run then
    if not fresh:
        warm_page_cache(p for fmt in FORMATS for p in paths[fmt])
    rows = []

    # One thread, no loader: what reading the cache costs next to copying the same bytes from memory.
    memory = [np.load(p) for p in paths["npy"]]
    def served(transform=None) -> ArrayDataset:
        """The prepared store through the one ArrayDataset, as training serves it (stored dtype kept)."""
        return ArrayDataset(PreparedStore(workdir / "cache", verify="size").split(), transform, keep_dtype=True)

    cache = served()
    turn = iter(range(10**9))
    seconds, calls = best_rate(lambda: np.array(memory[next(turn) % stacks]), stacks, 5)
    rows.append(row("memcpy (1 thread)", seconds, calls, sample_bytes, "np.array copy of an in-memory stack"))
    seconds, calls = best_rate(lambda: cache[next(turn) % stacks], stacks, 5)
    rows.append(row("cache read (1 thread)", seconds, calls, sample_bytes,
                    "prepared store item (ArrayDataset), no transform: np.load(mmap) + copy"))
    rows += handover_rows(memory[0].astype(np.float32))

    def loader_for(dataset: Dataset, batch_ring: bool | str = "auto") -> DataLoader:
        """medzoo's own loader, as the engine makes it (workers, prefetch, /dev/shm check, batch ring), on
        the CPU."""
        return make_loader(dataset, args.batch, shuffle=False, seed=SEED, num_workers=args.workers,
                           device="cpu", batch_ring=batch_ring)

    def loader_row(name: str, dataset: Dataset, what: str, cheap: bool = False) -> dict:
        loader = loader_for(dataset)
        # Cheap rows (under a second an epoch) get a warm-up and 3+ timed epochs even in --quick, as their
        # figures are otherwise mostly noise; the others pay worker start-up (~0.1 s) in --quick.
        warmup, timed = (1, max(3, epochs)) if cheap else (int(not args.quick), epochs)
        seconds, count, cpu = time_loader(loader, timed, warmup)
        del loader
        log(f"  {name}: {count / seconds:.2f} samples/s")
        return row(name, seconds, count, sample_bytes, what, cpu)

    rows.append(loader_row("cache", cache, "prepared cache, no augmentation + collate", True))
    rows.append(loader_row("memcpy loader", MemoryDataset(memory), "in-memory stack copy + collate", True))

    # The headline pair: medzoo's 2.5D pipeline from the cache and MONAI's from the .nii files, same loader
    # settings, in alternating epochs.
    ours = loader_for(served(augmentations()))
    without_noise = loader_for(served(augmentations(noise=False)))
    new_segments = loader_for(served(augmentations()), batch_ring=False)
    settings = {key: getattr(ours, key) for key in LOADER_KEYS}
    ring = getattr(ours, "ring", None)
    log(f"loader settings (medzoo's make_loader; MONAI gets the same): {settings}; {stacks} stacks of "
        f"{args.depth}x{args.size}x{args.size} int16, batch {args.batch}, {rounds} alternating round(s)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = monai_pipeline(paths["nii"], settings, args.batch)
        pair = alternate({"cache + aug": ours, "MONAI pipeline nii": theirs, NO_NOISE: without_noise,
                          NEW_SEGMENTS: new_segments}, rounds, round_warmup)
    del ours, theirs, without_noise, new_segments
    for name, what in (("cache + aug", CACHE_AUG), ("MONAI pipeline nii", MONAI_AUG),
                       (NO_NOISE, "prepared cache + flip/rot90/min-max + collate (diagnostic)"),
                       (NEW_SEGMENTS, "cache + aug, batches into new /dev/shm segments (loader.batch_ring=false)")):
        total = pair[name]
        rows.append(row(name, total["seconds"], total["samples"], sample_bytes, what, total["cpu"]))
    round_ratios = [a / b for a, b in zip(pair["cache + aug"]["round_rates"],
                                          pair["MONAI pipeline nii"]["round_rates"], strict=True)]

    aug = "read + 2.5D layout + stack_2d5_aug + collate"
    for fmt in FORMATS:
        rows.append(loader_row(f"{fmt} + aug", SourceDataset(paths[fmt], augmentations()), aug))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not args.quick:
            loader = monai_pipeline(paths["dicom"], settings, args.batch)
            seconds, count, cpu = time_loader(loader, epochs, 1)
            del loader
            log(f"  MONAI pipeline dicom: {count / seconds:.2f} samples/s")
            rows.append(row("MONAI pipeline dicom", seconds, count, sample_bytes, MONAI_AUG, cpu))

        from monai.transforms import LoadImage

        readers = {"nii": {}, "dicom": {"reader": "PydicomReader"}}
        if not args.quick:
            readers["nii.gz"] = {}
        reads = {}
        for fmt, kwargs in readers.items():
            chosen = paths[fmt][:reader_stacks]
            monai_default = LoadImage(image_only=True, **kwargs)
            monai_keep = LoadImage(image_only=True, dtype=None, **kwargs)
            reads[fmt] = time_calls({"ours": ours_read, "monai": monai_default, "monai_keep_dtype": monai_keep},
                                    chosen, read_repeats)
            for who, seconds in reads[fmt].items():
                note = {"ours": "medzoo read_volume", "monai": "MONAI LoadImage (default: float32)",
                        "monai_keep_dtype": "MONAI LoadImage(dtype=None)"}[who]
                rows.append(row(f"read {fmt}: {who}", seconds, 1, sample_bytes, f"{note}, file to memory"))
            log(f"  read {fmt}: " + ", ".join(f"{k} {v:.3f} s" for k, v in reads[fmt].items()))

    rate = {r["name"]: r["samples_per_s"] for r in rows}
    cpu = {r["name"]: r.get("cpu_s_per_sample") for r in rows}
    ratios = {
        "cache_vs_memcpy": rate["cache read (1 thread)"] / rate["memcpy (1 thread)"],
        "cache_aug_vs_monai_pipeline": rate["cache + aug"] / rate["MONAI pipeline nii"],
        "nii_vs_monai_loadimage": reads["nii"]["monai"] / reads["nii"]["ours"],
        "dicom_vs_monai_loadimage": reads["dicom"]["monai"] / reads["dicom"]["ours"],
    }
    extra = {
        "cache_loader_vs_memcpy_loader": rate["cache"] / rate["memcpy loader"],
        "cache_aug_without_noise_vs_monai_pipeline":
            rate[NO_NOISE] / rate["MONAI pipeline nii"],
        "cache_aug_ring_vs_new_segments": rate["cache + aug"] / rate[NEW_SEGMENTS],
        "nii_aug_vs_monai_pipeline": rate["nii + aug"] / rate["MONAI pipeline nii"],
        "nii_vs_monai_loadimage_keep_dtype": reads["nii"]["monai_keep_dtype"] / reads["nii"]["ours"],
        "dicom_vs_monai_loadimage_keep_dtype": reads["dicom"]["monai_keep_dtype"] / reads["dicom"]["ours"],
        "cache_aug_vs_nii_aug": rate["cache + aug"] / rate["nii + aug"],
        "cache_aug_vs_dicom_aug": rate["cache + aug"] / rate["dicom + aug"],
    }
    if cpu["cache + aug"] and cpu["MONAI pipeline nii"]:
        extra["cache_aug_vs_monai_pipeline_cpu_time"] = cpu["MONAI pipeline nii"] / cpu["cache + aug"]
    if "nii.gz" in reads:
        extra["niigz_vs_monai_loadimage"] = reads["nii.gz"]["monai"] / reads["nii.gz"]["ours"]
    if "MONAI pipeline dicom" in rate:
        extra["cache_aug_vs_monai_pipeline_dicom"] = rate["cache + aug"] / rate["MONAI pipeline dicom"]
    result = {
        "bench": "loader", "date": date.today().isoformat(), "quick": args.quick,
        "machine": {**machine_before, "load_average_after": machine()["load_average_1_5_15_min"]},
        "config": {"stacks": stacks, "stacks_per_format": counts, "shape": [args.depth, args.size, args.size], "dtype": "int16",
                   "sample_bytes": sample_bytes, "batch": args.batch, "epochs": epochs, "repeats": repeats,
                   "alternating_rounds": rounds, "alternating_warmup_rounds": round_warmup,
                   "reader_stacks": reader_stacks, "read_repeats": read_repeats, "loader": settings, "seed": SEED,
                   "batch_ring_slots": None if ring is None else int(ring.slots.shape[0]),
                   "batch_ring_setup_seconds": None if ring is None else round(ring.setup_seconds, 3),
                   "augmentation": OmegaConf.to_container(OmegaConf.load(AUG_CONFIG))["train"],
                   "sources_written": fresh},
        "prepare_seconds": round(prepare_seconds, 2),
        "rows": rows,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "extra_ratios": {k: round(v, 3) for k, v in extra.items()},
        "cache_aug_vs_monai_pipeline_by_round": [round(v, 3) for v in round_ratios],
        "goals": {k: {"goal": goal, "value": round(ratios[k], 3), "met": ratios[k] >= goal}
                  for k, goal in GOALS.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def print_table(result: dict) -> None:
    print(f"{'row':32s} {'samples/s':>10s} {'GB/s':>8s} {'CPU s/sample':>13s}  what")
    for r in result["rows"]:
        cpu = f"{r['cpu_s_per_sample']:13.3f}" if "cpu_s_per_sample" in r else f"{'':13s}"
        print(f"{r['name']:32s} {r['samples_per_s']:10.2f} {r['gb_per_s']:8.3f} {cpu}  {r['what']}")
    print()
    for name, goal in result["goals"].items():
        verdict = "met" if goal["met"] else "MISSED"
        print(f"{name:44s} {goal['value']:8.2f}   goal >= {goal['goal']:g}: {verdict}")
    for name, value in result["extra_ratios"].items():
        print(f"{name:44s} {value:8.2f}")
    rounds = ", ".join(f"{v:.2f}" for v in result["cache_aug_vs_monai_pipeline_by_round"])
    print(f"{'cache_aug_vs_monai_pipeline by round':44s} {rounds}")
    print(f"\n{result['seconds']} s in all (prepare: {result['prepare_seconds']} s); load average "
          f"{result['machine']['load_average_1_5_15_min']} before, {result['machine']['load_average_after']} after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 alternating rounds, 1 epoch elsewhere, 4 stacks of .nii.gz, DICOM and TIFF (~3 min "
                             "on 2 free cores)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--stacks", type=int, default=None,
                        help="number of stacks (default 8; --quick writes at most 4 of .nii.gz, DICOM and TIFF)")
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
