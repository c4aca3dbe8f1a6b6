"""Intensity many-channel transforms: normalisation, gamma, brightness and contrast."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medzoo.errors import ConfigError
from medzoo.transforms.kernels import (
    Params,
    map_planes,
    min_max,
    plane_stats,
    stack_stats,
    value_pair,
    value_range,
)
from medzoo.transforms.transform import Transform

NORMALIZATIONS = ("standard", "image", "image_per_channel", "min_max")
# Normalize "image"/"image_per_channel" follow albumentations: std + 1e-4, result clipped to +-20.
IMAGE_NORM_EPS, IMAGE_NORM_CLIP = 1e-4, 20.0


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
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        if self.normalization == "standard":
            mpv = self.max_pixel_value or max_value or value_range(array.dtype)
            scale, shift = self.scale_shift(array.shape[0], mpv)
            clip = None
        elif self.normalization == "min_max":
            scale, shift = min_max_scale_shift(*min_max(array))
            clip = None
        else:
            stats = stack_stats(array) if self.normalization == "image" else plane_stats(array)
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

        return map_planes(array, inplace, kernel, out)


def min_max_scale_shift(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale, shift) with low * scale + shift = 0 and high * scale + shift = 1; both 0 if low == high."""
    scale = 1.0 / (high - low) if high > low else 0.0
    return np.float32(scale), np.float32(-low * scale)



class Gamma(Transform):
    """max_value * (x / max_value) ** gamma, gamma = U(gamma_limit) / 100 (albumentations' RandomGamma)."""

    def __init__(self, gamma_limit: float | Sequence[float] = (80, 120), max_value: float | None = None,
                 p: float = 0.5):
        super().__init__(p)
        self.gamma_limit = value_pair(gamma_limit, "Gamma.gamma_limit")
        if self.gamma_limit[0] <= 0:
            raise ConfigError(f"Gamma.gamma_limit must be positive, got {gamma_limit!r}")
        self.max_value = max_value

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        return {"gamma": float(rng.uniform(*self.gamma_limit)) / 100.0}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
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

        return map_planes(array, inplace, kernel, out)


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
        self.brightness_limit = value_pair(brightness_limit, "BrightnessContrast.brightness_limit",
                                       symmetric=True)
        self.contrast_limit = value_pair(contrast_limit, "BrightnessContrast.contrast_limit", symmetric=True)
        self.brightness_by_max, self.max_value = bool(brightness_by_max), max_value

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        return {"alpha": 1.0 + float(rng.uniform(*self.contrast_limit)),
                "beta": float(rng.uniform(*self.brightness_limit))}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        top = self.max_value or max_value or value_range(array.dtype)
        alpha = params["alpha"]
        beta = params["beta"] * (top if self.brightness_by_max else float(plane_stats(array)[0].mean()))
        alpha, beta, top = np.float32(alpha), np.float32(beta), np.float32(top)

        def kernel(src: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
            np.multiply(src, alpha, out=out)
            out += beta
            np.clip(out, 0, top, out=out)

        return map_planes(array, inplace, kernel, out)
