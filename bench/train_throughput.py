"""Training throughput of the engine vs a plain PyTorch loop: 2D ResNet-18/50 at 224 px, 3D ResNet-18 at 64^3 and
96^3, and a 1000-channel 2D slice stack; eager, channels_last and torch.compile; data-wait fraction and peak memory.

    python bench/train_throughput.py --json OUT.json                 # the GPU suite (as specified for the H200)
    python bench/train_throughput.py --device cpu --quick --json OUT.json   # a small CPU run of the same code

Data are synthetic uint8 samples held in memory and fed through medzoo's loader (seeded sampler, per-sample
cast), so the figures measure the model step and the loader, not JPEG decoding. The `device` case holds the
split on the device and augments each batch there (loader.device_cache, the GPU recipe's path); the
`device_augment` case has the workers hand over the 1000-channel stacks as uint8 and augments each batch
on the device (loader.device_augment: flip, rot90, min-max, noise, as `transforms=stack_2d5_aug`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from plain_loop import plain_epoch, sync

from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.dataset import ArrayDataset
from medzoo.engine.optim import build_optimizer, build_scheduler
from medzoo.engine.precision import Precision
from medzoo.engine.runtime import resolve_device
from medzoo.engine.throughput import TimedLoader
from medzoo.engine.trainer import Trainer
from medzoo.loading.device_data import DeviceAugmentedLoader, DeviceResidentLoader
from medzoo.loading.loader import make_loader
from medzoo.transforms import batch
from medzoo.transforms.batch import Compose
from medzoo.zoo import create_model
from medzoo.zoo.card import versions


@dataclass(frozen=True)
class Case:
    model: str
    spatial_dims: int
    size: int
    channels: int
    batch: int
    loader: str = "workers"  # workers: CPU DataLoader; device: split held on the device, augmented per batch there;
    # device_augment: CPU DataLoader of stored uint8 samples, augmented per batch on the device


GPU_CASES = [Case("resnet18", 2, 224, 3, 256), Case("resnet50", 2, 224, 3, 256), Case("resnet18", 3, 64, 1, 32),
             Case("resnet18", 3, 96, 1, 16), Case("resnet18", 2, 256, 1000, 32),
             Case("resnet18", 2, 224, 1, 256, loader="device"),
             Case("resnet18", 2, 256, 1000, 32, loader="device_augment")]
CPU_CASES = [Case("resnet18", 2, 224, 3, 16), Case("resnet50", 2, 224, 3, 8), Case("resnet18", 3, 64, 1, 4),
             Case("resnet18", 3, 96, 1, 2), Case("resnet18", 2, 256, 1000, 4),
             Case("resnet18", 2, 224, 1, 16, loader="device"),
             Case("resnet18", 2, 256, 1000, 4, loader="device_augment")]


def stack_augmentation() -> Compose:
    """`transforms=stack_2d5_aug`'s per-batch steps: flip, rot90, min-max to [0, 1], unclipped noise."""
    return Compose([batch.HorizontalFlip(p=0.5), batch.RandomRotate90(p=0.5), batch.Normalize(normalization="min_max"),
                    batch.GaussianNoise(std_range=(0.0, 0.1), max_value=1.0, clip=False, p=1.0)])


def device_augmentation() -> Compose:
    """The brain-tumour GPU recipe's kind of per-batch augmentation (flip, affine, intensity, z-score)."""
    return Compose([batch.HorizontalFlip(p=0.5), batch.Affine(rotate=(-15, 15), scale=(0.9, 1.1), p=0.7),
                    batch.BrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.6),
                    batch.Normalize(normalization="image")])


class Cycled(torch.utils.data.Dataset):
    """`length` samples drawn from a smaller pool, so a 1000-channel run does not need tens of GB of RAM."""

    def __init__(self, dataset: ArrayDataset, length: int):
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item):
        index, seed = item
        return self.dataset[(index % len(self.dataset), seed)]


POOL_BYTES = 2 * 2**30


def make_data(case: Case, steps: int, workers: int, device: torch.device):
    rng = np.random.default_rng(0)
    count = case.batch * steps
    spatial = (case.size,) * case.spatial_dims
    pool = max(1, min(count, POOL_BYTES // (case.channels * case.size**case.spatial_dims)))
    split = SplitArrays(rng.integers(0, 255, (pool, case.channels, *spatial), dtype=np.uint8),
                        rng.integers(0, 4, pool), [str(i) for i in range(pool)])
    if case.loader == "device":
        return DeviceResidentLoader(split, device_augmentation(), case.batch, seed=0, device=device)
    stored = case.loader == "device_augment"
    loader = make_loader(Cycled(ArrayDataset(split, None, keep_dtype=stored), count), case.batch, shuffle=True,
                         seed=0, num_workers=workers, drop_last=True, pin_memory=device.type == "cuda")
    return DeviceAugmentedLoader(loader, stack_augmentation(), seed=0, device=device) if stored else loader


def build(case: Case, device: torch.device, channels_last: bool):
    torch.manual_seed(0)
    model = create_model(case.model, in_chans=case.channels, num_classes=4, spatial_dims=case.spatial_dims,
                         input_size=case.size)
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)


def engine_run(case, loader, device, precision, channels_last, compile_model) -> tuple[float, float]:
    model = build(case, device, channels_last)
    optimizer = build_optimizer(OmegaConf.create({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3,
                                                  "weight_decay": 0.05}), model)
    scheduler = build_scheduler(OmegaConf.create({"name": "constant"}), optimizer, len(loader), 1)
    settings = OmegaConf.create({"max_epochs": 1, "accumulate_grad_batches": 1, "grad_clip_norm": None,
                                 "compile": compile_model, "compile_mode": "default", "log_every_n_steps": 50,
                                 "progress": False, "monitor": "accuracy", "on_nonfinite": "stop"})
    trainer = Trainer(model, optimizer, scheduler, torch.nn.CrossEntropyLoss(), device=device, precision=precision,
                      settings=settings, channels_last=channels_last, classes=list("abcd"), run_dir=Path("."),
                      on_best=lambda *a: None)
    trainer.train_one_epoch(loader, 0)  # warm-up epoch: kernels, allocator, compilation
    timed = TimedLoader(loader)
    sync(device)
    start = time.perf_counter()
    trainer.train_one_epoch(timed, 0)
    sync(device)
    elapsed = time.perf_counter() - start
    return len(loader) * loader.batch_size / elapsed, timed.wait / elapsed


def plain_run(case, loader, device, precision, channels_last, compile_model) -> float:
    model = build(case, device, channels_last)
    step_model = torch.compile(model) if compile_model else model
    layout = torch.channels_last if channels_last else torch.contiguous_format
    plain_epoch(step_model, loader, device, precision.dtype, layout)  # warm-up (and compilation)
    return plain_epoch(step_model, loader, device, precision.dtype, layout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer steps and variants")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--cases", default=None, help="comma-separated case indices to run (default: all)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    precision = Precision.resolve("auto", device)
    cases = GPU_CASES if device.type == "cuda" else CPU_CASES
    steps = args.steps or (4 if args.quick else 30)
    workers = args.workers if args.workers is not None else (0 if device.type == "cpu" else 8)
    results = []
    chosen = set(args.cases.split(",")) if args.cases else None
    for index, case in enumerate(cases):
        if chosen is not None and str(index) not in chosen:
            continue
        loader = make_data(case, steps, workers, device)
        variants = [(False, False)] + ([(True, False)] if case.spatial_dims == 2 else [])
        if not args.no_compile and not args.quick:
            variants.append((case.spatial_dims == 2, True))
        for channels_last, compile_model in variants:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            described = {"model": case.model, "spatial_dims": case.spatial_dims, "size": case.size,
                         "channels": case.channels, "batch_size": case.batch, "loader": case.loader,
                         "precision": precision.name, "channels_last": channels_last, "compile": compile_model}
            try:  # one failing case (e.g. a non-finite loss) must not cost the figures of the others
                engine, wait = engine_run(case, loader, device, precision, channels_last, compile_model)
                peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
                plain = plain_run(case, loader, device, precision, channels_last, compile_model)
            except Exception as exc:  # noqa: BLE001 - recorded in the results and printed
                results.append({**described, "error": f"{type(exc).__name__}: {exc}"[:500]})
                print(f"{case.model:<9} {case.spatial_dims}D {case.size:>4} C={case.channels:<5} failed: {exc}",
                      flush=True)
                write_results(args.json, device, steps, workers, results)
                continue
            row = {**described, "images_per_s": engine, "plain_images_per_s": plain,
                   "data_wait_fraction": wait, "engine_vs_plain": engine / plain, "peak_mem_gb": peak}
            results.append(row)
            write_results(args.json, device, steps, workers, results)  # after every case: a cut run keeps its rows
            print(f"{case.model:<9} {case.spatial_dims}D {case.size:>4} C={case.channels:<5} {case.loader:<14} "
                  f"cl={channels_last!s:<5} "
                  f"compile={compile_model!s:<5} {engine:9.1f} img/s  plain {plain:9.1f}  ratio {engine / plain:.3f}  "
                  f"wait {wait:.3f}" + (f"  peak {peak:.1f} GB" if peak is not None else ""), flush=True)


def write_results(path: Path | None, device: torch.device, steps: int, workers: int, results: list[dict]) -> None:
    if path is None:
        return
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or 'x86_64'})"
    measured = [r["engine_vs_plain"] for r in results if "engine_vs_plain" in r]
    payload = {"device": name, "date": date.today().isoformat(), "threads": torch.get_num_threads(),
               "versions": versions(), "steps": steps, "workers": workers, "results": results,
               "median_engine_vs_plain": statistics.median(measured) if measured else None}
    path.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
