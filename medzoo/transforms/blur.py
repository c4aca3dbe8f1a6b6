"""Gaussian blur of every plane of a many-channel stack."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from medzoo.errors import ConfigError
from medzoo.transforms import kernels
from medzoo.transforms.kernels import (
    Params,
    run_blocks,
    value_pair,
)
from medzoo.transforms.transform import Transform


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
        low, high = value_pair(blur_limit, "GaussianBlur.blur_limit")
        self.blur_limit = (int(low), int(high))
        self.sigma_limit = value_pair(sigma_limit, "GaussianBlur.sigma_limit")
        if self.sigma_limit[0] <= 0:
            raise ConfigError(f"GaussianBlur.sigma_limit must be positive, got {sigma_limit!r}")

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        sigma = float(rng.uniform(*self.sigma_limit))
        ksize = int(rng.integers(self.blur_limit[0], self.blur_limit[1] + 1))
        return {"sigma": sigma, "ksize": len(gaussian_kernel_1d(sigma, ksize))}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        kernel = gaussian_kernel_1d(params["sigma"], params["ksize"])
        channels, height, width = array.shape
        out = kernels.new_output(array.shape, out)
        convert = array.dtype != np.float32

        def work(start: int, stop: int) -> None:
            for c in range(start, stop):
                # OpenCV's integer-to-float filter is not vectorised: converting the plane first is 2x faster
                plane = array[c].astype(np.float32) if convert else array[c]
                cv2.sepFilter2D(plane, cv2.CV_32F, kernel, kernel, dst=out[c],
                                borderType=cv2.BORDER_REFLECT_101)

        run_blocks(channels, work, 1, height * width)
        return out
