"""Engine throughput vs a plain hand-written PyTorch loop, measured side by side in one run.

Both train ResNet-18 on the same cached 128 px uint8 images through the same loader, with the same batch
size, precision and memory format; rounds alternate (engine, plain, engine, ...) so machine drift cancels.

    python bench/engine.py --json OUT.json            # ~2 min on a 2-core CPU
    python bench/engine.py --quick                    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
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
from medzoo.engine.trainer import Trainer
from medzoo.loading.loader import make_loader
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo import create_model

SETTINGS = {"max_epochs": 1, "accumulate_grad_batches": 1, "grad_clip_norm": None, "compile": False,
            "compile_mode": "default", "log_every_n_steps": 20, "on_nonfinite": "stop", "progress": False, "monitor": "accuracy"}
OPTIM = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 0.05}


def make_loader_for(size: int, batch: int, steps: int, seed: int) -> torch.utils.data.DataLoader:
    rng = np.random.default_rng(seed)
    count = batch * steps
    split = SplitArrays(rng.integers(0, 255, (count, 1, size, size), dtype=np.uint8),
                        rng.integers(0, 4, count), [str(i) for i in range(count)])
    spec = TransformSpec(train=[{"_target_": "albumentations.HorizontalFlip", "p": 0.5},
                                {"_target_": "albumentations.Normalize", "normalization": "image"}])
    return make_loader(ArrayDataset(split, spec.pipeline("train")), batch, shuffle=True, seed=seed, num_workers=0,
                       drop_last=True)


def new_model(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet18", in_chans=1, num_classes=4, stem="imagenet")
    return model.to(device, memory_format=torch.channels_last)


def engine_round(loader, device, precision) -> float:
    model = new_model(device)
    optimizer = build_optimizer(OmegaConf.create(OPTIM), model)
    scheduler = build_scheduler(OmegaConf.create({"name": "constant", "warmup_epochs": 0}), optimizer, len(loader), 1)
    trainer = Trainer(model, optimizer, scheduler, torch.nn.CrossEntropyLoss(), device=device, precision=precision,
                      settings=OmegaConf.create(SETTINGS), channels_last=True, classes=list("abcd"),
                      run_dir=Path("."), on_best=lambda *a: None)
    start = time.perf_counter()
    trainer.train_one_epoch(loader, 0)
    sync(device)
    return len(loader) * loader.batch_size / (time.perf_counter() - start)


def plain_round(loader, device, precision) -> float:
    return plain_epoch(new_model(device), loader, device, precision.dtype, torch.channels_last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a smoke run)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    rounds, steps = (2, 3) if args.quick else (5, 12)
    device = resolve_device(args.device)
    precision = Precision.resolve("auto", device)
    loader = make_loader_for(args.size, args.batch, steps, seed=0)
    engine_round(loader, device, precision)  # warm-up: allocator, kernels, first-call overheads
    plain_round(loader, device, precision)
    engine, plain = [], []
    for _ in range(rounds):
        engine.append(engine_round(loader, device, precision))
        plain.append(plain_round(loader, device, precision))
    result = {"engine_images_per_s": statistics.median(engine), "plain_images_per_s": statistics.median(plain),
              "device": str(torch.cuda.get_device_name() if device.type == "cuda" else "cpu"),
              "threads": torch.get_num_threads(), "precision": precision.name, "size": args.size,
              "batch_size": args.batch, "steps_per_round": steps, "rounds": rounds,
              "engine_rounds": engine, "plain_rounds": plain, "torch": torch.__version__}
    result["ratio"] = result["engine_images_per_s"] / result["plain_images_per_s"]
    print(f"engine {result['engine_images_per_s']:.1f} img/s   plain {result['plain_images_per_s']:.1f} img/s   "
          f"ratio {result['ratio']:.3f}   ({precision.name}, {args.size} px, batch {args.batch}, {device})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
