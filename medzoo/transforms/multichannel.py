"""Per-sample augmentations on channel-first (C, H, W) arrays for any channel count, from 1 to 1000+.

albumentations works on H x W x C images through OpenCV, which (version 5) refuses most operations
beyond 4 or 512 channels, so slice stacks either fail or go through slow per-chunk copies. These
transforms keep the CHW layout of the cache: flips and 90-degree rotations are views; resizes and blurs
run one OpenCV call per plane (a contiguous 2D image, nothing transposed); the affine warp goes through
OpenCV's vectorised 4-channel path four planes at a time; intensity transforms run chains of NumPy ufuncs
on cache-sized blocks of planes, so that each costs one pass over memory. Work is spread over
`torch.get_num_threads()` threads (one inside DataLoader workers).

Values stay in the units of the input: uint8 input gives float32 output in 0..255. Transforms whose effect
depends on the value range (Gamma, BrightnessContrast, GaussianNoise, Normalize) take `max_value`
(`max_pixel_value` for Normalize); left at None it is the range of the dtype the `Compose` (or the
transform, when called alone) received: 255 for uint8, 65535 for uint16, 1.0 for floats, as in albumentations.

Every transform draws its parameters with `sample_params(rng, shape)` and applies them with
`apply(array, params)`, so the same parameters can be replayed through `medzoo.transforms.batch`.
"""

from __future__ import annotations

import inspect
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
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
NORMALIZATIONS = ("standard", "image", "image_per_channel", "min_max")
# Normalize "image"/"image_per_channel" follow albumentations: std + 1e-4, result clipped to +-20.
IMAGE_NORM_EPS, IMAGE_NORM_CLIP = 1e-4, 20.0
# Elementwise work runs on blocks of about this many bytes: a block and its result stay in the L2 cache,
# so a chain of NumPy ufuncs costs one pass over memory instead of one pass per ufunc.
BLOCK_BYTES = 1 << 20
# Noise is drawn in independent streams of this many values, so that threads can share the work while
# the result stays the same whatever the number of threads.
NOISE_BLOCK = 1 << 18
# Inside a stream, normal values are made this many at a time, so that the chunk and its temporaries stay
# in the L2 cache while the Box-Muller chain of ufuncs runs over them.
NOISE_CHUNK = 1 << 15
_ONE_BITS = np.uint32(0x3F800000)  # exponent bits of 1.0f: OR-ed with 23 random mantissa bits, [1, 2)
_TWO_PI = np.float32(2.0 * math.pi)
PARALLEL_MIN = 1 << 20

_POOL: tuple[int, int, ThreadPoolExecutor] | None = None
# The buffer that `Compose(image, out=...)` offers to the first transform that makes a new float32 result.
_DESTINATION = threading.local()


def value_range(dtype: np.dtype | torch.dtype) -> float:
    """The maximum value of a dtype's natural range: 255 for uint8, 65535 for uint16, 1.0 for floats."""
    if isinstance(dtype, torch.dtype):
        if dtype.is_floating_point:
            return 1.0
        return float(torch.iinfo(dtype).max)
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def _new_output(shape: tuple[int, ...]) -> np.ndarray:
    """A new float32 array for a transform's result: the buffer a `Compose` was given, the first time one of
    this shape is asked for in its call, else fresh memory.

    Writing a sample's first new result straight into the caller's buffer (a batch slot, see
    `medzoo.datasets.batch_ring`) saves a copy and the page faults of a fresh allocation.
    """
    offered = getattr(_DESTINATION, "buffer", None)
    if offered is not None and offered.shape == tuple(shape):
        _DESTINATION.buffer = None
        return offered
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


def _run_blocks(count: int, kernel: Callable[[int, int], None], step: int = 1, item_size: int = 1) -> None:
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


def _plane_step(shape: tuple[int, ...]) -> int:
    """How many float32 planes make one cache-sized block."""
    return max(1, BLOCK_BYTES // (4 * shape[-1] * shape[-2]))


def _map_planes(array: np.ndarray, inplace: bool,
                kernel: Callable[[np.ndarray, np.ndarray, int, int], None]) -> np.ndarray:
    """float32 result of `kernel(source_block, out_block, start, stop)` over cache-sized blocks of planes.

    The result is `array` itself when `inplace` and it is writable float32, else one new array; the input
    is never converted as a whole (ufuncs convert uint8/uint16 blocks on the fly). A flipped or rotated
    view reaches the kernel as contiguous blocks (see `_contiguous_planes`).
    """
    if inplace and array.dtype == np.float32 and array.flags.writeable:
        out = array
    else:
        out = _new_output(array.shape)
    strided = out is not array and not array.flags.c_contiguous

    def block(start: int, stop: int) -> None:
        source = _contiguous_planes(array[start:stop]) if strided else array[start:stop]
        kernel(source, out[start:stop], start, stop)

    _run_blocks(array.shape[0], block, _plane_step(array.shape), array[0].size)
    return out


# dtypes that cv2.flip and cv2.transpose copy (they move elements of 1, 2, 4 or 8 bytes)
_CV_COPY_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32,
                                         np.float64)}


def _contiguous_planes(block: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of a (C, H, W) block of flipped and/or rotated planes (views of the cache).

    NumPy's copies and ufuncs are 3-5x slower on a reversed or transposed plane than on a contiguous one;
    OpenCV's flip and transpose make the contiguous copy of one plane in the L2 cache first.
    """
    out = np.empty(block.shape, block.dtype)
    for source, target in zip(block, out, strict=True):
        _copy_plane(source, target)
    return out


def _copy_plane(plane: np.ndarray, out: np.ndarray) -> None:
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


def _plane_memory_order(array: np.ndarray) -> np.ndarray:
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


def _range(value: float | Sequence[float], name: str, symmetric: bool = False) -> tuple[float, float]:
    """A (low, high) pair from a config value; a single number is (-v, v) if `symmetric` else (v, v)."""
    if isinstance(value, (int, float)):
        return (-float(value), float(value)) if symmetric else (float(value), float(value))
    values = [float(v) for v in value]
    if len(values) != 2 or values[0] > values[1]:
        raise ConfigError(f"{name} must be a number or a (low, high) pair with low <= high, got {value!r}")
    return values[0], values[1]


def _check_chw(array: np.ndarray | torch.Tensor, ndim: int = 3) -> None:
    if array.ndim != ndim:
        layout = "(C, H, W)" if ndim == 3 else "(B, C, H, W)"
        raise ValueError(f"expected a channel-first {layout} array, got shape {tuple(array.shape)}; "
                         "use medzoo.transforms.layout.to_channel_first for H x W x C images")


def _interpolation(name: str) -> str:
    if name not in INTERPOLATIONS:
        raise ConfigError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {name!r}")
    return name


class Transform:
    """Base of the per-sample transforms: a probability `p` and a private `numpy.random.Generator`."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"{type(self).__name__}: p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = np.random.default_rng()

    def set_random_state(self, seed: int | None = None,
                         state: np.random.Generator | None = None) -> Transform:
        """Reseed the private generator (MONAI's name); `state` installs a ready generator instead."""
        self.rng = state if state is not None else np.random.default_rng(seed)
        return self

    def set_seed(self, seed: int | None) -> Transform:
        """Reseed the private generator so that the output depends only on `seed`."""
        return self.set_random_state(seed)

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        """Draw this transform's random parameters for one (C, H, W) array."""
        return {}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        """Apply with given parameters; `inplace` allows overwriting `array` when it is float32."""
        raise NotImplementedError

    def skip(self, array: np.ndarray) -> np.ndarray:
        """What a call that does not fire (probability 1 - p) returns."""
        return array

    def __call__(self, array: np.ndarray, max_value: float | None = None,
                 inplace: bool = False) -> np.ndarray:
        """Transform one (C, H, W) array with probability `p`."""
        _check_chw(array)
        if self.p < 1.0 and not self.rng.random() < self.p:
            return self.skip(array)
        return self.apply(array, self.sample_params(self.rng, array.shape), max_value, inplace)

    def __repr__(self) -> str:
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n, None)!r}' for n in names)})"


class HorizontalFlip(Transform):
    """Mirror left-right (a view, no copy)."""

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        return array[..., ::-1]


class VerticalFlip(Transform):
    """Mirror top-bottom (a view, no copy)."""

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        return array[..., ::-1, :]


class RandomRotate90(Transform):
    """Rotate by k x 90 degrees counter-clockwise, k drawn from {0, 1, 2, 3} (a view, no copy)."""

    def __init__(self, p: float = 1.0):
        super().__init__(p)

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        return {"k": int(rng.integers(0, 4))}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        return np.rot90(array, params["k"], axes=(1, 2))


def affine_matrix(angle: float, scale: float, tx: float, ty: float, height: int, width: int,
                  scale_y: float | None = None) -> np.ndarray:
    """The 2 x 3 forward (source -> destination pixel) matrix: scale and rotate about the centre, then shift.

    The same convention as albumentations' Affine: the centre is ((W - 1) / 2, (H - 1) / 2), a positive
    angle turns the image counter-clockwise on screen, and `scale_y` (default: `scale`) scales the y axis
    before the rotation.
    """
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    rad = math.radians(angle)
    sy = scale if scale_y is None else scale_y
    a, b = math.cos(rad) * scale, math.sin(rad) * sy
    c, d = -math.sin(rad) * scale, math.cos(rad) * sy
    return np.array([[a, b, cx + tx - a * cx - b * cy],
                     [c, d, cy + ty - c * cx - d * cy]], dtype=np.float64)


class Affine(Transform):
    """Rotate, scale and translate all channels with one warp.

    Args:
        scale: zoom factor or (low, high) range; 1 keeps the size.
        translate_percent: shift as a fraction of the width/height, or a (low, high) range drawn per axis.
        rotate: degrees or (low, high) range; positive is counter-clockwise.
        border_mode: "constant" (filled with `fill`), "reflect" or "replicate".
        keep_ratio: one zoom factor for both axes; False draws the x and y factors independently
            (albumentations' default).
        whole_pixels: shifts truncated to whole pixels (albumentations' rule) instead of exact fractions.
    """

    def __init__(self, scale: float | Sequence[float] = (1.0, 1.0),
                 translate_percent: float | Sequence[float] = (0.0, 0.0),
                 rotate: float | Sequence[float] = (0.0, 0.0), interpolation: str = "bilinear",
                 border_mode: str = "constant", fill: float = 0.0, keep_ratio: bool = True,
                 whole_pixels: bool = False, p: float = 0.5):
        super().__init__(p)
        self.keep_ratio, self.whole_pixels = bool(keep_ratio), bool(whole_pixels)
        self.scale = _range(scale, "Affine.scale")
        self.translate_percent = _range(translate_percent, "Affine.translate_percent")
        self.rotate = _range(rotate, "Affine.rotate")
        self.interpolation = _interpolation(interpolation)
        if border_mode not in BORDER_MODES:
            raise ConfigError(f"Affine.border_mode must be one of {sorted(BORDER_MODES)}, "
                              f"got {border_mode!r}")
        self.border_mode, self.fill = border_mode, float(fill)

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        height, width = shape[-2:]
        params = {"angle": float(rng.uniform(*self.rotate)), "scale": float(rng.uniform(*self.scale)),
                  "tx": float(rng.uniform(*self.translate_percent)) * width,
                  "ty": float(rng.uniform(*self.translate_percent)) * height}
        if self.whole_pixels:
            params["tx"], params["ty"] = float(int(params["tx"])), float(int(params["ty"]))
        if not self.keep_ratio:
            params["scale_y"] = float(rng.uniform(*self.scale))
        return params

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        channels, height, width = array.shape
        matrix = affine_matrix(params["angle"], params["scale"], params["tx"], params["ty"], height, width,
                               params.get("scale_y"))
        out = _new_output((channels, height, width))
        flags = INTERPOLATIONS[self.interpolation]
        border, fill = BORDER_MODES[self.border_mode], (self.fill,) * 4

        # OpenCV's warp is vectorised for 4-channel images, about 8x faster per channel than for single
        # planes (and OpenCV 5 takes no more than 4 channels anyway), so warp groups of four planes through
        # a small H x W x 4 buffer that stays in cache. The last group is padded, so that every channel takes
        # exactly the same arithmetic path. Interleaving: NumPy's transposed copy is the faster for float32,
        # cv2.merge of the narrower uint8/uint16 planes (then one conversion) for integers.
        integer = array.dtype != np.float32

        def work(start: int, stop: int) -> None:
            count = stop - start
            if integer:
                planes = [np.ascontiguousarray(array[c]) for c in range(start, stop)]
                planes += [np.zeros_like(planes[0])] * (4 - count)
                group = cv2.merge(planes).astype(np.float32)
            else:
                group = array[start:stop].transpose(1, 2, 0)
                if count < 4:
                    group = np.concatenate([group, np.zeros((height, width, 4 - count), group.dtype)], axis=2)
                group = np.ascontiguousarray(group, dtype=np.float32)
            warped = cv2.warpAffine(group, matrix, (width, height), flags=flags, borderMode=border,
                                    borderValue=fill)
            if integer:
                for i in range(count):
                    cv2.extractChannel(warped, i, dst=out[start + i])
            else:
                out[start:stop] = warped.transpose(2, 0, 1)[:count]

        _run_blocks(channels, work, 4, height * width)
        return out


def _resize_planes(array: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    """Resize every (possibly cropped) plane of a CHW array to height x width, in float32."""
    out = _new_output((array.shape[0], height, width))
    flags = INTERPOLATIONS[interpolation]
    convert = array.dtype != np.float32

    def work(start: int, stop: int) -> None:
        for c in range(start, stop):
            plane = array[c].astype(np.float32) if convert else array[c]
            cv2.resize(plane, (width, height), dst=out[c], interpolation=flags)

    _run_blocks(array.shape[0], work, 1, array[0].size)
    return out


class Resize(Transform):
    """Resize to height x width (bilinear: half-pixel centres, no antialiasing, as cv2 and albumentations).

    A call that does not fire (p < 1) still resizes, so that every sample keeps the same shape.
    """

    def __init__(self, height: int, width: int, interpolation: str = "bilinear", p: float = 1.0):
        super().__init__(p)
        self.height, self.width = int(height), int(width)
        self.interpolation = _interpolation(interpolation)

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        return _resize_planes(array, self.height, self.width, self.interpolation)

    def skip(self, array: np.ndarray) -> np.ndarray:
        return self.apply(array, {})


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


class RandomResizedCrop(Transform):
    """Crop a random area and aspect ratio, then resize it to `size` (the torchvision/albumentations rule).

    A call that does not fire (p < 1) resizes the whole image, so that every sample keeps the same shape.
    """

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = "bilinear", p: float = 1.0):
        super().__init__(p)
        self.size = _size_pair(size)
        self.scale = _range(scale, "RandomResizedCrop.scale")
        self.ratio = _range(ratio, "RandomResizedCrop.ratio")
        self.interpolation = _interpolation(interpolation)

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        height, width = shape[-2:]
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = rng.uniform(self.scale[0] * area, self.scale[1] * area)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                y0 = int((height - h + 1) * rng.random())
                x0 = int((width - w + 1) * rng.random())
                return {"y0": y0, "x0": x0, "h": h, "w": w}
        w, h = self.fallback_size(height, width)
        return {"y0": (height - h) // 2, "x0": (width - w) // 2, "h": h, "w": w}

    def fallback_size(self, height: int, width: int) -> tuple[int, int]:
        """(w, h) of the crop used when no try fits: the largest central crop whose ratio is in range, as
        torchvision does."""
        if width / height < self.ratio[0]:
            return width, round(width / self.ratio[0])
        if width / height > self.ratio[1]:
            return round(height * self.ratio[1]), height
        return width, height

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        y0, x0, h, w = params["y0"], params["x0"], params["h"], params["w"]
        return _resize_planes(array[:, y0:y0 + h, x0:x0 + w], *self.size, self.interpolation)

    def skip(self, array: np.ndarray) -> np.ndarray:
        return _resize_planes(array, *self.size, self.interpolation)


def _channel_values(value: float | Sequence[float], channels: int, name: str) -> np.ndarray:
    """A scalar, or one value per channel, as a (C or 1, 1, 1) array for broadcasting."""
    values = np.asarray(value if isinstance(value, (int, float)) else list(value), np.float64).reshape(-1)
    if values.size not in (1, channels):
        raise ConfigError(f"Normalize.{name} has {values.size} values for an image of {channels} channels; "
                          "give one value or one per channel")
    return values.reshape(-1, 1, 1)


class Normalize(Transform):
    """Per-channel (x - mean * max_pixel_value) / (std * max_pixel_value), or a per-image z-score.

    Args:
        mean: one value or one per channel (normalization="standard").
        std: one value or one per channel (normalization="standard").
        max_pixel_value: scale of `mean`/`std`; None uses the input dtype's range (255 for uint8 input).
        normalization: "standard", "image" (one mean/std over the whole stack), "image_per_channel"
            (those two follow albumentations: divide by std + 1e-4 and clip to +-20) or "min_max": the
            whole stack scaled to [0, 1] by its own minimum and maximum (MONAI's ScaleIntensity; a constant
            image becomes 0).
    """

    def __init__(self, mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0,
                 max_pixel_value: float | None = None, normalization: str = "standard", p: float = 1.0):
        super().__init__(p)
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"Normalize.normalization must be one of {', '.join(map(repr, NORMALIZATIONS))}, "
                              f"got {normalization!r}")
        self.mean = mean if isinstance(mean, (int, float)) else [float(v) for v in mean]
        self.std = std if isinstance(std, (int, float)) else [float(v) for v in std]
        if np.any(np.asarray(self.std, dtype=np.float64) == 0):
            raise ConfigError("Normalize.std must not contain 0")
        self.max_pixel_value = max_pixel_value
        self.normalization = normalization
        self._scale_shift: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = {}

    def scale_shift(self, channels: int, max_value: float) -> tuple[np.ndarray, np.ndarray]:
        """The per-channel (scale, shift) of the "standard" mode: out = x * scale + shift."""
        key = (channels, float(max_value))
        if key not in self._scale_shift:  # 1000 per-channel values from config: convert them once
            mean = _channel_values(self.mean, channels, "mean") * max_value
            scale = 1.0 / (_channel_values(self.std, channels, "std") * max_value)
            scale, shift = np.broadcast_arrays(scale, -mean * scale)  # one value, or one per channel, each
            self._scale_shift[key] = (scale.astype(np.float32), shift.astype(np.float32))
        return self._scale_shift[key]

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        if self.normalization == "standard":
            mpv = self.max_pixel_value or max_value or value_range(array.dtype)
            scale, shift = self.scale_shift(array.shape[0], mpv)
            clip = None
        elif self.normalization == "min_max":
            scale, shift = min_max_scale_shift(*_min_max(array))
            clip = None
        else:
            stats = _stack_stats(array) if self.normalization == "image" else _plane_stats(array)
            mean, std = (np.asarray(value, np.float64) for value in stats)
            scale = (1.0 / (std + IMAGE_NORM_EPS)).reshape(-1, 1, 1).astype(np.float32)
            shift = (-np.reshape(mean, (-1, 1, 1)) * scale).astype(np.float32)
            clip = (np.float32(-IMAGE_NORM_CLIP), np.float32(IMAGE_NORM_CLIP))
        per_channel = scale.size > 1

        def kernel(src: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
            np.multiply(src, scale[start:stop] if per_channel else scale, out=out)
            out += shift[start:stop] if per_channel else shift
            if clip is not None:
                np.clip(out, *clip, out=out)

        return _map_planes(array, inplace, kernel)


def min_max_scale_shift(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale, shift) with low * scale + shift = 0 and high * scale + shift = 1; both 0 if low == high."""
    scale = 1.0 / (high - low) if high > low else 0.0
    return np.float32(scale), np.float32(-low * scale)


def _min_max(array: np.ndarray) -> tuple[float, float]:
    """Smallest and largest value of the whole array, plane blocks on the worker threads."""
    blocks: list[tuple[float, float]] = []

    ordered = _plane_memory_order(array)

    def kernel(start: int, stop: int) -> None:
        block = ordered[start:stop]
        blocks.append((float(block.min()), float(block.max())))  # list.append is atomic under the GIL

    _run_blocks(array.shape[0], kernel, _plane_step(array.shape), array[0].size)
    return min(low for low, _ in blocks), max(high for _, high in blocks)


def _plane_stats(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-plane mean and standard deviation; memory is read once, the centred pass reuses the cache."""
    channels = array.shape[0]
    mean, std = np.empty(channels), np.empty(channels)
    ordered = _plane_memory_order(array)

    def kernel(start: int, stop: int) -> None:
        block = ordered[start:stop].reshape(stop - start, -1)
        # float32 pairwise sums of one plane are accurate to ~1e-7; the centred second pass avoids the
        # cancellation of E[x^2] - E[x]^2 on large uint16 values
        mean[start:stop] = block.sum(axis=1, dtype=np.float32) / block.shape[1]
        centred = np.subtract(block, mean[start:stop, None].astype(np.float32), dtype=np.float32)
        np.multiply(centred, centred, out=centred)
        std[start:stop] = np.sqrt(centred.sum(axis=1, dtype=np.float32) / block.shape[1])

    _run_blocks(channels, kernel, _plane_step(array.shape), array[0].size)
    return mean, std


def _stack_stats(array: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the whole stack, from the per-plane moments (total variance = mean of
    the variances + variance of the means)."""
    mean, std = _plane_stats(array)
    return float(mean.mean()), float(np.sqrt(np.mean(std**2 + (mean - mean.mean()) ** 2)))


class Gamma(Transform):
    """max_value * (x / max_value) ** gamma, gamma = U(gamma_limit) / 100 (albumentations' RandomGamma)."""

    def __init__(self, gamma_limit: float | Sequence[float] = (80, 120), max_value: float | None = None,
                 p: float = 0.5):
        super().__init__(p)
        self.gamma_limit = _range(gamma_limit, "Gamma.gamma_limit")
        if self.gamma_limit[0] <= 0:
            raise ConfigError(f"Gamma.gamma_limit must be positive, got {gamma_limit!r}")
        self.max_value = max_value

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        return {"gamma": float(rng.uniform(*self.gamma_limit)) / 100.0}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        gamma, top = params["gamma"], self.max_value or max_value or value_range(array.dtype)
        # top * (x / top) ** gamma = exp(gamma * log(x) + (1 - gamma) * log(top)): NumPy's float32 exp and
        # log are vectorised, its power is not
        g, offset = np.float32(gamma), np.float32((1.0 - gamma) * math.log(top))

        def kernel(src: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
            with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf gives exp(-inf) = 0
                np.log(src, out=out, dtype=np.float32)  # uint8 would otherwise go through float16
                out *= g
                if offset:
                    out += offset
                np.exp(out, out=out)

        return _map_planes(array, inplace, kernel)


class BrightnessContrast(Transform):
    """clip(alpha * x + beta, 0, max_value) (albumentations' RandomBrightnessContrast).

    Args:
        brightness_limit: beta ~ U(brightness_limit) * max_value, or * the image mean when
            `brightness_by_max=False`; a single number v means (-v, v).
        contrast_limit: alpha ~ 1 + U(contrast_limit); a single number v means (-v, v).
    """

    def __init__(self, brightness_limit: float | Sequence[float] = (-0.2, 0.2),
                 contrast_limit: float | Sequence[float] = (-0.2, 0.2), brightness_by_max: bool = True,
                 max_value: float | None = None, p: float = 0.5):
        super().__init__(p)
        self.brightness_limit = _range(brightness_limit, "BrightnessContrast.brightness_limit",
                                       symmetric=True)
        self.contrast_limit = _range(contrast_limit, "BrightnessContrast.contrast_limit", symmetric=True)
        self.brightness_by_max, self.max_value = bool(brightness_by_max), max_value

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        return {"alpha": 1.0 + float(rng.uniform(*self.contrast_limit)),
                "beta": float(rng.uniform(*self.brightness_limit))}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        top = self.max_value or max_value or value_range(array.dtype)
        alpha = params["alpha"]
        beta = params["beta"] * (top if self.brightness_by_max else float(_plane_stats(array)[0].mean()))
        alpha, beta, top = np.float32(alpha), np.float32(beta), np.float32(top)

        def kernel(src: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
            np.multiply(src, alpha, out=out)
            out += beta
            np.clip(out, 0, top, out=out)

        return _map_planes(array, inplace, kernel)


class GaussianNoise(Transform):
    """clip(x + max_value * (mean + std * N(0, 1)), 0, max_value) (albumentations' GaussNoise).

    Args:
        std_range: (low, high) of the noise standard deviation as a fraction of `max_value`; (0, s) draws
            it as MONAI's RandGaussianNoise(std=s) does.
        mean_range: noise mean as a fraction of `max_value`.
        per_channel: independent noise per channel; False shares one noise plane across channels.
        clip: clip the result to [0, max_value] (albumentations); False adds the noise unclipped, as MONAI
            does, which z-scored or other zero-centred inputs need.
    """

    def __init__(self, std_range: Sequence[float] = (0.2, 0.44), mean_range: Sequence[float] = (0.0, 0.0),
                 per_channel: bool = True, max_value: float | None = None, clip: bool = True, p: float = 0.5):
        super().__init__(p)
        self.std_range = _range(std_range, "GaussianNoise.std_range")
        self.mean_range = _range(mean_range, "GaussianNoise.mean_range")
        self.per_channel, self.max_value, self.clip = bool(per_channel), max_value, bool(clip)

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        """The noise itself is drawn in `apply` from `seed`; pass params["noise"] to replay given noise."""
        return {"mean": float(rng.uniform(*self.mean_range)), "std": float(rng.uniform(*self.std_range)),
                "seed": int(rng.integers(0, 2**63))}

    def noise_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the standard normal field: (C, H, W), or (1, H, W) when shared across channels."""
        return tuple(shape) if self.per_channel else (1, *shape[-2:])

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        top = np.float32(self.max_value or max_value or value_range(array.dtype))
        scale, offset = np.float32(params["std"] * top), np.float32(params["mean"] * top)
        clip_top = top if self.clip else None
        given = params.get("noise")
        if not self.per_channel:
            plane = given if given is not None else _normal(params["seed"], array.shape[-1] * array.shape[-2])
            plane = np.asarray(plane, np.float32).reshape(array.shape[-2:]) * scale + offset

            def shared(src: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
                np.add(src, plane, out=out)
                if clip_top is not None:
                    np.clip(out, 0, clip_top, out=out)

            return _map_planes(array, inplace, shared)

        out = _noise_target(array, inplace)
        # the noise is added to `out` in place when it already holds the input (a float32 buffer of ours, or
        # a converted copy of a strided view), and to the input read directly otherwise
        source = (out if out is array or not array.flags.c_contiguous else array).reshape(-1)
        flat, size = out.reshape(-1), out.size
        blocks = -(-size // NOISE_BLOCK)
        seeds = np.random.SeedSequence(params["seed"]).generate_state(blocks, np.uint64)
        replay = None if given is None else np.asarray(given, np.float32).reshape(-1)

        def per_pixel(first: int, last: int) -> None:
            for block in range(first, last):
                start, stop = block * NOISE_BLOCK, min((block + 1) * NOISE_BLOCK, size)
                if replay is None:
                    _add_normal(np.random.SFC64(int(seeds[block])), flat[start:stop], scale, offset,
                                clip_top, source[start:stop])
                    continue
                noise = replay[start:stop] * scale
                if offset:
                    noise += offset
                np.add(source[start:stop], noise, out=flat[start:stop])
                if clip_top is not None:
                    np.clip(flat[start:stop], 0, clip_top, out=flat[start:stop])

        _run_blocks(blocks, per_pixel, 1, NOISE_BLOCK)
        return out


def _noise_target(array: np.ndarray, inplace: bool) -> np.ndarray:
    """The contiguous float32 array that GaussianNoise writes: `array` itself when allowed, else a new one.

    A strided view (a flip or rotation of the cache) is first converted into the new array, so that the
    noise pass can then run over flat memory.
    """
    flags = array.flags
    if inplace and array.dtype == np.float32 and flags.writeable and flags.c_contiguous:
        return array
    if not flags.c_contiguous:
        return _map_planes(array, False, lambda source, out, start, stop: np.copyto(out, source))
    return _new_output(array.shape)


def _uniform_1_2(bits: np.random.BitGenerator, count: int) -> np.ndarray:
    """`count` (even) float32 values uniform in [1, 2): 23 random mantissa bits under the exponent of 1."""
    raw = bits.random_raw(count // 2).view(np.uint32)
    raw >>= 9
    raw |= _ONE_BITS
    return raw.view(np.float32)


def _add_normal(bits: np.random.BitGenerator, out: np.ndarray, scale: float, offset: float = 0.0,
               top: float | None = None, source: np.ndarray | None = None) -> np.ndarray:
    """out = clip(source + offset + scale * N(0, 1), 0, top), float32 noise made by Box-Muller.

    `out` and `source` are flat; `source` None means 0 and `top` None means no clip; `source` may be `out`.
    Each pair of 23-bit uniforms (u, v) gives two independent normals r cos(2 pi v) and r sin(2 pi v),
    r = sqrt(-2 ln u). NumPy's vectorised float32 log, sqrt, sin and cos over raw SFC64 bits, a cache-sized
    chunk at a time, beat torch's normal_ (its uniforms come from a scalar Mersenne Twister) and NumPy's
    float32 ziggurat (one call per value) on one core. The tails reach 5.6 standard deviations
    (u >= 2**-23), as with any float32 uniform.
    """
    size = out.size
    scale2, offset, cosine_buffer = np.float32(-2.0 * float(scale) ** 2), np.float32(offset), None
    for start in range(0, size, NOISE_CHUNK):
        stop = min(start + NOISE_CHUNK, size)
        pairs = (stop - start + 1) // 2
        uniform = _uniform_1_2(bits, 2 * pairs)
        radius, angle = uniform[:pairs], uniform[pairs:]
        np.subtract(np.float32(2.0), radius, out=radius)  # (0, 1]: log stays finite
        np.log(radius, out=radius)
        radius *= scale2
        np.sqrt(radius, out=radius)  # scale * sqrt(-2 ln u)
        angle *= _TWO_PI  # [2 pi, 4 pi) is one full turn: the same sines and cosines as [0, 2 pi)
        if cosine_buffer is None or cosine_buffer.size < pairs:
            cosine_buffer = np.empty(pairs, np.float32)
        cosine = np.cos(angle, out=cosine_buffer[:pairs])
        np.sin(angle, out=angle)
        cosine *= radius
        angle *= radius
        halves = ((start, start + pairs, cosine), (start + pairs, stop, angle[:stop - start - pairs]))
        for first, last, noise in halves:
            if source is None:
                out[first:last] = noise
            else:
                np.add(source[first:last], noise, out=out[first:last])
        block = out[start:stop]
        if offset:
            block += offset
        if top is not None:
            np.clip(block, 0, top, out=block)
    return out


def _normal(seed: int, size: int) -> np.ndarray:
    """`size` standard normal float32 values from `seed`."""
    return _add_normal(np.random.SFC64(seed % 2**64), np.empty(size, np.float32), 1.0)


def gaussian_kernel_1d(sigma: float, ksize: int = 0) -> np.ndarray:
    """Normalised 1D Gaussian; ksize 0 means int(3.5 sigma) * 2 + 1, even sizes grow by 1 (albumentations)."""
    size = int(sigma * 3.5) * 2 + 1 if ksize == 0 else int(ksize)
    size += 1 - size % 2
    x = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


class GaussianBlur(Transform):
    """Separable Gaussian blur of every channel, borders mirrored without repeating the edge (reflect-101).

    Args:
        blur_limit: kernel size or (low, high) range; 0 derives the size from sigma.
        sigma_limit: sigma or (low, high) range in pixels.
    """

    def __init__(self, blur_limit: int | Sequence[int] = 0, sigma_limit: float | Sequence[float] = (0.5, 3.0),
                 p: float = 0.5):
        super().__init__(p)
        low, high = _range(blur_limit, "GaussianBlur.blur_limit")
        self.blur_limit = (int(low), int(high))
        self.sigma_limit = _range(sigma_limit, "GaussianBlur.sigma_limit")
        if self.sigma_limit[0] <= 0:
            raise ConfigError(f"GaussianBlur.sigma_limit must be positive, got {sigma_limit!r}")

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        sigma = float(rng.uniform(*self.sigma_limit))
        ksize = int(rng.integers(self.blur_limit[0], self.blur_limit[1] + 1))
        return {"sigma": sigma, "ksize": len(gaussian_kernel_1d(sigma, ksize))}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        kernel = gaussian_kernel_1d(params["sigma"], params["ksize"])
        channels, height, width = array.shape
        out = _new_output(array.shape)
        convert = array.dtype != np.float32

        def work(start: int, stop: int) -> None:
            for c in range(start, stop):
                # OpenCV's integer-to-float filter is not vectorised: converting the plane first is 2x faster
                plane = array[c].astype(np.float32) if convert else array[c]
                cv2.sepFilter2D(plane, cv2.CV_32F, kernel, kernel, dst=out[c],
                                borderType=cv2.BORDER_REFLECT_101)

        _run_blocks(channels, work, 1, height * width)
        return out


def _kernel_3x3(rng: np.random.Generator, outputs: int, inputs: int, size: int) -> np.ndarray:
    """Normal random weights; a 1 x 1 kernel is the centre of a zero 3 x 3 one (the same convolution)."""
    weight = np.zeros((outputs, inputs, 3, 3), np.float32)
    if size == 1:
        weight[:, :, 1, 1] = rng.standard_normal((outputs, inputs))
    else:
        weight[:] = rng.standard_normal((outputs, inputs, 3, 3))
    return weight


class RandomIntensityNetwork(Transform):
    """A random global intensity and texture mapping: GIN (Ouyang et al., "Causality-inspired single-source
    domain generalization for medical image segmentation", IEEE TMI 2022).

    Images from another scanner, site or sequence show the same anatomy with another intensity mapping and
    texture. A shallow convolutional network with fresh normal random weights each call (1 x 1 or 3 x 3
    kernels, leaky ReLU between layers) maps the standardised image to a new "style"; its output is scaled to
    the image's energy and mixed with the image, `alpha` ~ U(alpha range) of it, and returned in the input's
    units. Shapes and edges stay where they were; intensities, contrasts (even their sign) and local texture
    change. Every channel of a stack goes through the same network, as every slice of a scan goes through the
    same scanner; the standardisation and the energy use the whole stack.

    Args:
        layers: convolutions in the network (GIN: 4).
        channels: feature maps between layers (GIN: 2).
        kernel_sizes: sizes each layer draws from (1 and/or 3).
        alpha: (low, high) share of the network's output in the mix.
        negative_slope: of the leaky ReLU between layers.
    """

    def __init__(self, layers: int = 4, channels: int = 2, kernel_sizes: Sequence[int] = (1, 3),
                 alpha: float | Sequence[float] = (0.0, 1.0), negative_slope: float = 0.2, p: float = 0.5):
        super().__init__(p)
        if int(layers) < 1 or int(channels) < 1:
            raise ConfigError(f"RandomIntensityNetwork: layers and channels must be >= 1, got {layers}, {channels}")
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not self.kernel_sizes or set(self.kernel_sizes) - {1, 3}:
            raise ConfigError(f"RandomIntensityNetwork.kernel_sizes must be drawn from 1 and 3, got {kernel_sizes!r}")
        self.alpha = _range(alpha, "RandomIntensityNetwork.alpha")
        if not 0.0 <= self.alpha[0] <= self.alpha[1] <= 1.0:
            raise ConfigError(f"RandomIntensityNetwork.alpha must lie in [0, 1], got {alpha!r}")
        self.layers, self.channels, self.negative_slope = int(layers), int(channels), float(negative_slope)

    def widths(self) -> list[int]:
        """Feature maps in and out of each layer: 1 -> channels -> ... -> 1."""
        return [1] + [self.channels] * (self.layers - 1) + [1]

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        widths, params = self.widths(), {"alpha": float(rng.uniform(*self.alpha))}
        for layer in range(self.layers):
            size = int(rng.choice(self.kernel_sizes))
            params[f"weight{layer}"] = _kernel_3x3(rng, widths[layer + 1], widths[layer], size)
            params[f"bias{layer}"] = rng.standard_normal(widths[layer + 1]).astype(np.float32)
        return params

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        mean, std = _stack_stats(array)
        std = std if std > 1e-6 * max(abs(mean), 1.0) else 1.0  # a flat stack: only the shift matters
        out = array if inplace and array.dtype == np.float32 and array.flags.writeable else _new_output(array.shape)
        styled = np.empty(array.shape, np.float32)
        layers = [(np.asarray(params[f"weight{i}"], np.float32), np.asarray(params[f"bias{i}"], np.float32))
                  for i in range(self.layers)]
        energy = np.zeros(array.shape[0])

        def work(start: int, stop: int) -> None:
            # one OpenCV correlation per kernel and plane: for single images far faster than torch, whose
            # thread pool costs more than the work (torch's own path serves batches in medzoo.transforms.batch)
            for c in range(start, stop):
                hidden = [(array[c].astype(np.float32) - np.float32(mean)) / np.float32(std)]
                for layer, (weight, bias) in enumerate(layers):
                    hidden = [_correlate_sum(hidden, weight[o]) + bias[o] for o in range(weight.shape[0])]
                    if layer < len(layers) - 1:
                        hidden = [np.maximum(h, h * np.float32(self.negative_slope)) for h in hidden]
                styled[c] = hidden[0]
                energy[c] = np.vdot(hidden[0], hidden[0])

        _run_blocks(array.shape[0], work, 1, array.shape[1] * array.shape[2] * 4 * self.channels * self.layers)
        # scaled to the standardised stack's energy (its sum of squares is its size), back in input units
        alpha = params["alpha"]
        gain = np.float32(alpha * std * math.sqrt(array.size / max(float(energy.sum()), 1e-12)))
        np.multiply(array, np.float32(1.0 - alpha), out=out, dtype=np.float32, casting="unsafe")
        out += gain * styled
        out += np.float32(alpha * mean)
        return out


def _correlate_sum(planes: Sequence[np.ndarray], kernels: np.ndarray) -> np.ndarray:
    """Sum over inputs of each plane correlated with its 3 x 3 kernel, borders reflect-101 (torch's reflect)."""
    total = None
    for plane, kernel in zip(planes, kernels, strict=True):
        if not kernel.any():
            continue
        if not (kernel[0].any() or kernel[2].any() or kernel[:, 0].any() or kernel[:, 2].any()):
            term = plane * kernel[1, 1]  # a 1 x 1 kernel
        else:
            term = cv2.filter2D(plane, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT_101)
        total = term if total is None else total + term
    return total if total is not None else np.zeros_like(planes[0])


class CoarseDropout(Transform):
    """Fill random rectangles with `fill` in every channel (albumentations' CoarseDropout).

    The dtype is kept, as in albumentations, so `fill` is cast to it (0.5 becomes 0 in a uint8 image).

    Args:
        num_holes_range: (low, high) number of holes, both included.
        hole_height_range: (low, high) as fractions of the height if high < 1, else in pixels.
        hole_width_range: (low, high) as fractions of the width if high < 1, else in pixels.
    """

    def __init__(self, num_holes_range: Sequence[int] = (1, 2),
                 hole_height_range: Sequence[float] = (0.1, 0.2),
                 hole_width_range: Sequence[float] = (0.1, 0.2), fill: float = 0.0, p: float = 0.5):
        super().__init__(p)
        low, high = _range(num_holes_range, "CoarseDropout.num_holes_range")
        self.num_holes_range = (int(low), int(high))
        self.hole_height_range = _range(hole_height_range, "CoarseDropout.hole_height_range")
        self.hole_width_range = _range(hole_width_range, "CoarseDropout.hole_width_range")
        self.fill = float(fill)

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        height, width = shape[-2:]
        count = int(rng.integers(self.num_holes_range[0], self.num_holes_range[1] + 1))
        sizes = []
        for (low, high), extent in ((self.hole_height_range, height), (self.hole_width_range, width)):
            if high >= 1:
                sizes.append(rng.integers(int(low), int(min(high, extent)) + 1, size=count))
            else:
                sizes.append((extent * rng.uniform(low, high, size=count)).astype(np.int64))
        heights, widths = sizes
        y0 = rng.integers(0, height - heights + 1, size=count)
        x0 = rng.integers(0, width - widths + 1, size=count)
        return {"holes": np.stack([y0, x0, y0 + heights, x0 + widths], axis=-1).astype(np.int64)}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False) -> np.ndarray:
        # the dtype is kept (like albumentations): a uint16 stack is copied at half the bytes of float32
        out = array if inplace and array.flags.writeable else array.copy()
        for y0, x0, y1, x1 in np.asarray(params["holes"]).reshape(-1, 4).tolist():
            out[:, y0:y1, x0:x1] = self.fill
        return out


class Compose:
    """Apply transforms in order to a (C, H, W) array and return a contiguous float32 (C, H, W) array.

    `set_seed(seed)` reseeds every member from (seed, position), so a sample's augmentation depends only
    on the seed the engine derives from (run seed, epoch, index). Steps may be given as `_target_` dicts.
    """

    takes_out = True  # __call__ accepts out=: a dataset may have the result written into a batch slot

    def __init__(self, transforms: Sequence[Transform | Mapping[str, Any]] = ()):
        self.transforms = [_instantiate(step) for step in transforms]

    def set_seed(self, seed: int) -> Compose:
        """Reseed every member deterministically from `seed`."""
        for position, transform in enumerate(self.transforms):
            stream = np.random.SeedSequence([int(seed), position])
            transform.set_random_state(state=np.random.default_rng(stream))
        return self

    def set_random_state(self, seed: int) -> Compose:
        """MONAI's name for `set_seed`."""
        return self.set_seed(seed)

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Run every transform; steps after the first copy work in place on the pipeline's own buffer.

        Args:
            image: the (C, H, W) input; never written.
            out: a C-contiguous float32 buffer for the result (a batch slot). The first step that makes a new
                array of its shape writes there directly and later steps work on it in place; a result of
                the same shape made elsewhere is copied in. A result of another shape is returned as a new
                array and `out` is left as it was.
        """
        _check_chw(image)
        max_value = value_range(image.dtype)
        if out is not None and (out.dtype != np.float32 or not out.flags.c_contiguous
                                or not out.flags.writeable or np.may_share_memory(out, image)):
            raise ValueError("Compose: out must be a writable C-contiguous float32 array apart from the input, "
                             f"got {out.dtype} {out.shape}")
        result, offered = image, getattr(_DESTINATION, "buffer", None)
        if out is not None:
            _DESTINATION.buffer = out
        try:
            for transform in self.transforms:
                # the caller's array (or a view of it) is never written; a fresh result may be
                owned = not np.may_share_memory(result, image)
                result = transform(result, max_value=max_value, inplace=owned)
        finally:
            _DESTINATION.buffer = offered
        if out is None or result.shape != out.shape:
            return np.ascontiguousarray(result, dtype=np.float32)
        if result is not out:
            np.copyto(out, result)
        return out

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def _instantiate(step: Transform | Mapping[str, Any]) -> Transform:
    if not isinstance(step, Mapping):
        return step
    from medzoo.transforms.registry import build_step  # the one builder of steps: names from its table only

    return build_step(dict(step), "Compose.transforms")
