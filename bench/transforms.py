"""Multichannel transforms vs albumentations vs plain NumPy/torch, at 3, 64 and 1000 channels.

Each transform runs on one 256 x 256 (C, H, W) image, float32 and uint16. albumentations gets the same image
as a contiguous H x W x C array (its own layout, prepared outside the timing); where it raises, the reason
is recorded. The lower bound is the same operation written directly in NumPy/torch. A row is ok when the
transform works and is >= 3x faster than albumentations or within 1.2x of the lower bound.

    python bench/transforms.py --quick --json OUT.json     # ~1 min on a 2-core CPU
    python bench/transforms.py --json OUT.json             # more repeats
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medzoo.transforms import multichannel as mc

SIZE = 256
CHANNELS = (3, 64, 1000)
DTYPES = ("float32", "uint16")
CROP = 224


def _theta(angle: float) -> torch.Tensor:
    rad = math.radians(angle)
    return torch.tensor([[[math.cos(rad), -math.sin(rad), 0.0], [math.sin(rad), math.cos(rad), 0.0]]])


def _as_float(x: np.ndarray) -> np.ndarray:
    return x if x.dtype == np.float32 else x.astype(np.float32)


def _grid_sample(x: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(_as_float(x))[None]
    grid = F.affine_grid(_theta(10.0), list(tensor.shape), align_corners=False)
    return F.grid_sample(tensor, grid, align_corners=False)[0].numpy()


def _interpolate(x: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(_as_float(x))[None]
    return F.interpolate(tensor, size=(CROP, CROP), mode="bilinear", align_corners=False)[0].numpy()


def _blur(x: np.ndarray) -> np.ndarray:
    # two 1D passes, borders mirrored without repeating the edge ("mirror" = OpenCV's reflect-101)
    kernel = mc.gaussian_kernel_1d(1.5)
    out = ndimage.correlate1d(_as_float(x), kernel, axis=2, mode="mirror")
    return ndimage.correlate1d(out, kernel, axis=1, mode="mirror", output=out)


def _dropout(x: np.ndarray) -> np.ndarray:
    out = x.copy()  # the input must not change
    out[:, 40:78, 100:138] = 0  # two holes of the average size CoarseDropout(num_holes_range=(1, 4)) makes
    out[:, 150:188, 30:68] = 0
    return out


def _top(x: np.ndarray) -> np.float32:
    return np.float32(mc.value_range(x.dtype))


def _noise(x: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(0).standard_normal(x.shape, dtype=np.float32)
    return np.clip(x + noise * (np.float32(0.15) * _top(x)), 0, _top(x))


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    channels = x.shape[0]
    mean = np.linspace(0.3, 0.5, channels, dtype=np.float32).reshape(-1, 1, 1)
    return mean, np.full((channels, 1, 1), 0.25, np.float32)


def _normalize(x: np.ndarray) -> np.ndarray:
    mean, std = _stats(x)
    return (x - mean * _top(x)) / (std * _top(x))


# name: (ours(channels), albumentations(channels, max value), lower bound(image)); all fire (p=1)
CASES: dict[str, tuple[Callable[..., Any], Callable[..., Any], Callable[[np.ndarray], np.ndarray]]] = {
    "HorizontalFlip": (lambda c: mc.HorizontalFlip(p=1), lambda c, top: A.HorizontalFlip(p=1),
                       lambda x: np.flip(x, -1).copy()),
    "VerticalFlip": (lambda c: mc.VerticalFlip(p=1), lambda c, top: A.VerticalFlip(p=1),
                     lambda x: np.flip(x, -2).copy()),
    "RandomRotate90": (lambda c: mc.RandomRotate90(p=1), lambda c, top: A.RandomRotate90(p=1),
                       lambda x: np.rot90(x, 1, axes=(1, 2)).copy()),
    "Affine": (lambda c: mc.Affine(rotate=(-15, 15), scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), p=1),
               lambda c, top: A.Affine(rotate=(-15, 15), scale=(0.9, 1.1), translate_percent=(-0.05, 0.05),
                                       p=1),
               _grid_sample),
    "Resize": (lambda c: mc.Resize(CROP, CROP), lambda c, top: A.Resize(CROP, CROP), _interpolate),
    "RandomResizedCrop": (lambda c: mc.RandomResizedCrop(CROP, scale=(0.5, 1.0)),
                          lambda c, top: A.RandomResizedCrop((CROP, CROP), scale=(0.5, 1.0)),
                          lambda x: _interpolate(x[:, 20:220, 30:230])),
    "Normalize": (lambda c: mc.Normalize(mean=_stats(np.zeros((c, 1, 1)))[0].ravel().tolist(), std=0.25),
                  lambda c, top: A.Normalize(mean=_stats(np.zeros((c, 1, 1)))[0].ravel().tolist(),
                                             std=[0.25] * c, max_pixel_value=top),
                  _normalize),
    "Normalize(image)": (lambda c: mc.Normalize(normalization="image"),
                         lambda c, top: A.Normalize(normalization="image"),
                         lambda x: np.clip((x - x.mean()) / (x.std() + 1e-4), -20, 20)),
    "Gamma": (lambda c: mc.Gamma(p=1), lambda c, top: A.RandomGamma(p=1),
              lambda x: np.power(x / _top(x), np.float32(1.1)) * _top(x)),
    "BrightnessContrast": (lambda c: mc.BrightnessContrast(p=1),
                           lambda c, top: A.RandomBrightnessContrast(p=1),
                           lambda x: np.clip(x * np.float32(1.1) + np.float32(0.1) * _top(x), 0, _top(x))),
    "GaussianNoise": (lambda c: mc.GaussianNoise(std_range=(0.1, 0.2), p=1),
                      lambda c, top: A.GaussNoise(std_range=(0.1, 0.2), p=1), _noise),
    "GaussianBlur": (lambda c: mc.GaussianBlur(sigma_limit=(1.0, 2.0), p=1),
                     lambda c, top: A.GaussianBlur(sigma_limit=(1.0, 2.0), p=1), _blur),
    "CoarseDropout": (lambda c: mc.CoarseDropout(num_holes_range=(1, 4), p=1),
                      lambda c, top: A.CoarseDropout(num_holes_range=(1, 4), p=1), _dropout),
}


def timed(fn: Callable[[], Any], repeats: int, budget_s: float, warmup: int) -> float:
    """Median milliseconds of up to `repeats` calls after `warmup` untimed ones, within about `budget_s`.

    The first calls that allocate a large result are often several times slower (the kernel is still
    finding pages for it), so they are not counted.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats and sum(times) < budget_s:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def make_image(channels: int, dtype: str) -> np.ndarray:
    rng = np.random.default_rng(channels)
    if dtype == "uint16":
        return rng.integers(0, 65536, (channels, SIZE, SIZE), dtype=np.uint16)
    return rng.random((channels, SIZE, SIZE), dtype=np.float32)


def _error(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".strip()[:300]


def run_case(name: str, x: np.ndarray, hwc: np.ndarray, repeats: int, budget_s: float,
             warmup: int) -> dict[str, Any]:
    """One row: ours on the CHW image, albumentations on the same image as contiguous HWC, the lower bound."""
    ours_factory, albu_factory, lower = CASES[name]
    channels = x.shape[0]
    row: dict[str, Any] = {"name": name, "channels": channels, "dtype": str(x.dtype)}
    try:
        transform = ours_factory(channels).set_seed(0)
        out = np.asarray(transform(x))
        row.update(works=bool(np.isfinite(out).all() and out.shape[0] == channels),
                   view=bool(np.may_share_memory(out, x)))  # flips/rot90 return views, no copy
        del out
        row["ms"] = timed(lambda: transform(x), repeats, budget_s, warmup - 1)  # the call above warmed up
    except Exception as error:  # a failure is a result to report, not a crash of the benchmark
        row.update(works=False, ms=None, error=_error(error))
    try:
        albu = A.Compose([albu_factory(channels, mc.value_range(x.dtype))], seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            albu(image=hwc)
            row["albumentations_ms"] = timed(lambda: albu(image=hwc), repeats, budget_s, warmup - 1)
    except Exception as error:
        row.update(albumentations_ms=None, albumentations_error=_error(error))
    row["lower_bound_ms"] = timed(lambda: lower(x), repeats, budget_s, warmup)
    ms, albu_ms, low = row["ms"], row["albumentations_ms"], row["lower_bound_ms"]
    row["vs_albumentations"] = round(albu_ms / ms, 2) if ms and albu_ms else None
    row["vs_lower_bound"] = round(ms / low, 2) if ms is not None and low else None
    row["ok"] = bool(row["works"] and ms is not None
                     and ((albu_ms is not None and 3 * ms <= albu_ms) or ms <= 1.2 * low))
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    def fmt(value: float | None) -> str:
        return "fails" if value is None else f"{value:9.1f}"

    print(f"{'transform':<19} {'C':>5} {'dtype':<8} {'ms':>9} {'albu ms':>9} {'lower ms':>9} "
          f"{'xalbu':>6} {'/lower':>6}  ok")
    for r in rows:
        ratio = f"{r['vs_albumentations']:6.1f}" if r["vs_albumentations"] else f"{'-':>6}"
        lower = f"{r['vs_lower_bound']:6.2f}" if r["vs_lower_bound"] is not None else f"{'-':>6}"
        note = " (view)" if r.get("view") else ""
        print(f"{r['name']:<19} {r['channels']:>5} {r['dtype']:<8} {fmt(r['ms']):>9} "
              f"{fmt(r['albumentations_ms']):>9} {fmt(r['lower_bound_ms']):>9} {ratio} {lower}  "
              f"{'yes' if r['ok'] else 'NO'}{note}")
    failures = sorted({(r["name"], r["albumentations_error"].split(":")[0]) for r in rows
                       if r.get("albumentations_error")})
    for name, reason in failures:
        print(f"albumentations fails on {name}: {reason} (see JSON for the message)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (~1 min on 2 cores)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--only", nargs="*", default=None, help="transform names to run")
    args = parser.parse_args()
    repeats, budget_s, warmup = (5, 0.3, 1) if args.quick else (7, 4.0, 2)
    rows = []
    for channels in CHANNELS:
        for dtype in DTYPES:
            x = make_image(channels, dtype)
            hwc = np.ascontiguousarray(x.transpose(1, 2, 0))  # albumentations' own layout, made untimed
            rows += [run_case(name, x, hwc, repeats, budget_s, warmup) for name in (args.only or CASES)]
            del x, hwc
    rows.sort(key=lambda r: (list(CASES).index(r["name"]), r["channels"], r["dtype"]))
    print_table(rows)
    result = {"size": [SIZE, SIZE], "threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup,
              "transforms": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
