"""The shared machinery of the many-channel transforms: a small thread pool, cache-sized blocks of planes,
fast copies of flipped or rotated views, whole-stack statistics, and the checks of their settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import torch

from medzoo.errors import ConfigError

Params = dict[str, Any]

INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR}
BORDER_MODES = {"constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT,
                "replicate": cv2.BORDER_REPLICATE}
# Elementwise work runs on blocks of about this many bytes: a block and its result stay in the L2 cache,
# so a chain of NumPy ufuncs costs one pass over memory instead of one pass per ufunc.
BLOCK_BYTES = 1 << 20
PARALLEL_MIN = 1 << 20
_POOL: tuple[int, int, ThreadPoolExecutor] | None = None


def value_range(dtype: np.dtype | torch.dtype) -> float:
    """The maximum value of a dtype's natural range: 255 for uint8, 65535 for uint16, 1.0 for floats."""
    if isinstance(dtype, torch.dtype):
        if dtype.is_floating_point:
            return 1.0
        return float(torch.iinfo(dtype).max)
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def new_output(shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """A float32 array for a transform's result: `out` when it was given and has this shape, else fresh memory.

    `Compose(image, out=slot)` hands its caller's buffer (a batch slot, see `medzoo.loading.batch_ring`) to
    each step until one writes its result there: that saves a copy and the page faults of a fresh allocation.
    """
    if out is not None and out.shape == tuple(shape):
        return out
    return np.empty(shape, np.float32)


def _threads() -> int:
    # torch's setting follows the DataLoader: its workers run with one thread, and so do we there.
    return max(1, min(8, torch.get_num_threads()))


def _pool(threads: int) -> ThreadPoolExecutor:
    # OpenCV, NumPy ufuncs and NumPy random fills release the GIL, so a small pool spreads the work over
    # cores. A forked DataLoader worker inherits the pool object but not its threads: make a new one there.
    global _POOL
    if _POOL is None or _POOL[:2] != (os.getpid(), threads):
        if _POOL is not None and _POOL[0] == os.getpid():
            _POOL[2].shutdown(wait=False)  # the thread count changed
        _POOL = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="medzoo-transforms"))
    return _POOL[2]


def run_blocks(count: int, kernel: Callable[[int, int], None], step: int = 1, item_size: int = 1) -> None:
    """Call `kernel(start, stop)` on consecutive blocks of `step` items of [0, count), on the worker threads.

    Blocks are handed out as about eight tasks per thread rather than one fixed half each, so that a
    thread slowed down by other processes on the machine does not hold up the whole call. Below
    PARALLEL_MIN values (`count * item_size`) handing work to threads costs more than it saves.
    """
    threads = _threads()
    if threads == 1 or count <= step or count * item_size < PARALLEL_MIN:
        for start in range(0, count, step):
            kernel(start, min(start + step, count))
        return
    per_task = max(step, -(-count // (8 * threads)) // step * step)

    def task(first: int) -> None:
        for start in range(first, min(first + per_task, count), step):
            kernel(start, min(start + step, count))

    list(_pool(threads).map(task, range(0, count, per_task)))


def plane_step(shape: tuple[int, ...]) -> int:
    """How many float32 planes make one cache-sized block."""
    return max(1, BLOCK_BYTES // (4 * shape[-1] * shape[-2]))


def map_planes(array: np.ndarray, inplace: bool, kernel: Callable[[np.ndarray, np.ndarray, int, int], None],
               out: np.ndarray | None = None) -> np.ndarray:
    """float32 result of `kernel(source_block, out_block, start, stop)` over cache-sized blocks of planes.

    The result is `array` itself when `inplace` and it is writable float32, else `new_output(shape, out)`; the input
    is never converted as a whole (ufuncs convert uint8/uint16 blocks on the fly). A flipped or rotated
    view reaches the kernel as contiguous blocks (see `contiguous_planes`).
    """
    if inplace and array.dtype == np.float32 and array.flags.writeable:
        result = array
    else:
        result = new_output(array.shape, out)
    strided = result is not array and not array.flags.c_contiguous

    def block(start: int, stop: int) -> None:
        source = contiguous_planes(array[start:stop]) if strided else array[start:stop]
        kernel(source, result[start:stop], start, stop)

    run_blocks(array.shape[0], block, plane_step(array.shape), array[0].size)
    return result


# dtypes that cv2.flip and cv2.transpose copy (they move elements of 1, 2, 4 or 8 bytes)
_CV_COPY_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32,
                                         np.float64)}


def contiguous_planes(block: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of a (C, H, W) block of flipped and/or rotated planes (views of the cache).

    NumPy's copies and ufuncs are 3-5x slower on a reversed or transposed plane than on a contiguous one;
    OpenCV's flip and transpose make the contiguous copy of one plane in the L2 cache first.
    """
    out = np.empty(block.shape, block.dtype)
    for source, target in zip(block, out, strict=True):
        copy_plane(source, target)
    return out


def copy_plane(plane: np.ndarray, out: np.ndarray) -> None:
    """out[...] = plane for a 2D view that is a flip and/or transpose of rows with contiguous elements."""
    flip_rows, flip_cols = plane.strides[0] < 0, plane.strides[1] < 0
    base = plane[::-1 if flip_rows else 1, ::-1 if flip_cols else 1]  # positive strides
    code = {(True, True): -1, (True, False): 0, (False, True): 1}.get((flip_rows, flip_cols))
    item = plane.itemsize
    if plane.dtype not in _CV_COPY_DTYPES or min(plane.shape) < 2 or (code is None and base.strides[1] == item):
        np.copyto(out, plane)  # NumPy's own copy is fast for rows that are neither reversed nor transposed
    elif base.strides[1] == item:  # reversed rows and/or columns of contiguous elements: one flip
        cv2.flip(base, code, dst=out)
    elif base.strides[0] == item:  # a transposed plane (rotation by 90 degrees)
        cv2.transpose(base.T, dst=out)
        if code is not None:
            cv2.flip(out, code, dst=out)
    else:
        np.copyto(out, plane)


def plane_memory_order(array: np.ndarray) -> np.ndarray:
    """The same planes with each plane's elements in memory order: for reductions that ignore order.

    Reversed plane axes are turned around and a transposed plane is transposed back, so that a flipped
    or rotated view of the cache is reduced as fast as the cache itself.
    """
    reverse = tuple(slice(None, None, -1) if axis and stride < 0 else slice(None)
                    for axis, stride in enumerate(array.strides))
    view = array[reverse]
    if view.ndim >= 3 and view.strides[-1] > view.strides[-2]:
        view = view.swapaxes(-1, -2)
    return view


def value_pair(value: float | Sequence[float], name: str, symmetric: bool = False) -> tuple[float, float]:
    """A (low, high) pair from a config value; a single number is (-v, v) if `symmetric` else (v, v)."""
    if isinstance(value, (int, float)):
        return (-float(value), float(value)) if symmetric else (float(value), float(value))
    values = [float(v) for v in value]
    if len(values) != 2 or values[0] > values[1]:
        raise ConfigError(f"{name} must be a number or a (low, high) pair with low <= high, got {value!r}")
    return values[0], values[1]


def check_chw(array: np.ndarray | torch.Tensor, ndim: int = 3) -> None:
    if array.ndim != ndim:
        layout = "(C, H, W)" if ndim == 3 else "(B, C, H, W)"
        raise ValueError(f"expected a channel-first {layout} array, got shape {tuple(array.shape)}; "
                         "use medzoo.transforms.layout.to_channel_first for H x W x C images")


def check_interpolation(name: str) -> str:
    if name not in INTERPOLATIONS:
        raise ConfigError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {name!r}")
    return name
def min_max(array: np.ndarray) -> tuple[float, float]:
    """Smallest and largest value of the whole array, plane blocks on the worker threads."""
    blocks: list[tuple[float, float]] = []

    ordered = plane_memory_order(array)

    def kernel(start: int, stop: int) -> None:
        block = ordered[start:stop]
        blocks.append((float(block.min()), float(block.max())))  # list.append is atomic under the GIL

    run_blocks(array.shape[0], kernel, plane_step(array.shape), array[0].size)
    return min(low for low, _ in blocks), max(high for _, high in blocks)


def plane_stats(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-plane mean and standard deviation; memory is read once, the centred pass reuses the cache."""
    channels = array.shape[0]
    mean, std = np.empty(channels), np.empty(channels)
    ordered = plane_memory_order(array)

    def kernel(start: int, stop: int) -> None:
        block = ordered[start:stop].reshape(stop - start, -1)
        # float32 pairwise sums of one plane are accurate to ~1e-7; the centred second pass avoids the
        # cancellation of E[x^2] - E[x]^2 on large uint16 values
        mean[start:stop] = block.sum(axis=1, dtype=np.float32) / block.shape[1]
        centred = np.subtract(block, mean[start:stop, None].astype(np.float32), dtype=np.float32)
        np.multiply(centred, centred, out=centred)
        std[start:stop] = np.sqrt(centred.sum(axis=1, dtype=np.float32) / block.shape[1])

    run_blocks(channels, kernel, plane_step(array.shape), array[0].size)
    return mean, std


def stack_stats(array: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the whole stack, from the per-plane moments (total variance = mean of
    the variances + variance of the means)."""
    mean, std = plane_stats(array)
    return float(mean.mean()), float(np.sqrt(np.mean(std**2 + (mean - mean.mean()) ** 2)))
