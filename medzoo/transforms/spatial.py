"""Spatial many-channel transforms: flips, 90-degree turns, the affine warp, resizes, crops and dropout holes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from medzoo.errors import ConfigError
from medzoo.transforms import kernels
from medzoo.transforms.kernels import (
    BORDER_MODES,
    INTERPOLATIONS,
    Params,
    check_interpolation,
    run_blocks,
    value_pair,
)
from medzoo.transforms.transform import Transform


class HorizontalFlip(Transform):
    """Mirror left-right (a view, no copy)."""

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        return array[..., ::-1]


class VerticalFlip(Transform):
    """Mirror top-bottom (a view, no copy)."""

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        return array[..., ::-1, :]


class RandomRotate90(Transform):
    """Rotate by k x 90 degrees counter-clockwise, k drawn from {0, 1, 2, 3} (a view, no copy)."""

    def __init__(self, p: float = 1.0):
        super().__init__(p)

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        return {"k": int(rng.integers(0, 4))}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
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
        self.scale = value_pair(scale, "Affine.scale")
        self.translate_percent = value_pair(translate_percent, "Affine.translate_percent")
        self.rotate = value_pair(rotate, "Affine.rotate")
        self.interpolation = check_interpolation(interpolation)
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
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        channels, height, width = array.shape
        matrix = affine_matrix(params["angle"], params["scale"], params["tx"], params["ty"], height, width,
                               params.get("scale_y"))
        out = kernels.new_output((channels, height, width), out)
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

        run_blocks(channels, work, 4, height * width)
        return out


def resize_planes(array: np.ndarray, height: int, width: int, interpolation: str,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Resize every (possibly cropped) plane of a CHW array to height x width, in float32 (into `out` if it fits)."""
    out = kernels.new_output((array.shape[0], height, width), out)
    flags = INTERPOLATIONS[interpolation]
    convert = array.dtype != np.float32

    def work(start: int, stop: int) -> None:
        for c in range(start, stop):
            plane = array[c].astype(np.float32) if convert else array[c]
            cv2.resize(plane, (width, height), dst=out[c], interpolation=flags)

    run_blocks(array.shape[0], work, 1, array[0].size)
    return out


class Resize(Transform):
    """Resize to height x width (bilinear: half-pixel centres, no antialiasing, as cv2 and albumentations).

    A call that does not fire (p < 1) still resizes, so that every sample keeps the same shape.
    """

    def __init__(self, height: int, width: int, interpolation: str = "bilinear", p: float = 1.0):
        super().__init__(p)
        self.height, self.width = int(height), int(width)
        self.interpolation = check_interpolation(interpolation)

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        return resize_planes(array, self.height, self.width, self.interpolation, out)

    def skip(self, array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self.apply(array, {}, out=out)


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
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
        self.size = size_pair(size)
        self.scale = value_pair(scale, "RandomResizedCrop.scale")
        self.ratio = value_pair(ratio, "RandomResizedCrop.ratio")
        self.interpolation = check_interpolation(interpolation)

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
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        y0, x0, h, w = params["y0"], params["x0"], params["h"], params["w"]
        return resize_planes(array[:, y0:y0 + h, x0:x0 + w], *self.size, self.interpolation, out)

    def skip(self, array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return resize_planes(array, *self.size, self.interpolation, out)


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
        low, high = value_pair(num_holes_range, "CoarseDropout.num_holes_range")
        self.num_holes_range = (int(low), int(high))
        self.hole_height_range = value_pair(hole_height_range, "CoarseDropout.hole_height_range")
        self.hole_width_range = value_pair(hole_width_range, "CoarseDropout.hole_width_range")
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
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        # the dtype is kept (like albumentations): a uint16 stack is copied at half the bytes of float32
        out = array if inplace and array.flags.writeable else array.copy()
        for y0, x0, y1, x1 in np.asarray(params["holes"]).reshape(-1, 4).tolist():
            out[:, y0:y1, x0:x1] = self.fill
        return out
