"""Pixel similarity after a small alignment: tells a re-cropped or resized copy from a neighbouring MRI slice.

Plain thumbnail correlation cannot: a copy cropped by a pixel or two and resized correlates at 0.95-0.99, and so
do adjacent slices of one scan. Once the copy is aligned (scale and shift per axis) it correlates at >= 0.99,
while adjacent slices stay below (their anatomy differs, not their framing)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

MAX_SCALE_CHANGE = 0.10  # copies differ by a few percent of framing; beyond this it is another picture
MAX_SHIFT = 0.06  # of the thumbnail side


def aligned_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Best Pearson correlation of the central window of square image `a` with `b` warped by per-axis scale and
    shift (Nelder-Mead from the identity; both images the same size)."""
    size = a.shape[0]
    margin = max(1, size // 16)  # the window leaves room for the shift without sampling outside `b`
    inner = slice(margin, size - margin)
    target = _unit(a[inner, inner])
    limit = MAX_SHIFT * size

    def loss(params: np.ndarray) -> float:
        sx, sy, dx, dy = params
        if max(abs(sx - 1), abs(sy - 1)) > MAX_SCALE_CHANGE or max(abs(dx), abs(dy)) > limit:
            return 1.0
        # Scale and shift per axis is separable: two small interpolation matrices instead of a generic warp.
        warped = _resampler(size, sy, dy)[inner] @ b @ _resampler(size, sx, dx)[inner].T
        return -float(target @ _unit(warped))

    start = np.array([1.0, 1.0, 0.0, 0.0])
    simplex = np.vstack([start, start + np.diag([0.02, 0.02, 0.5, 0.5])])
    result = minimize(loss, start, method="Nelder-Mead",
                      options={"initial_simplex": simplex, "xatol": 1e-2, "fatol": 1e-4, "maxiter": 200})
    return max(-float(result.fun), -loss(start))


def _resampler(size: int, scale: float, shift: float) -> np.ndarray:
    """Linear-interpolation matrix: output pixel i samples input position (i - c) / scale + c + shift."""
    centre = (size - 1) / 2
    source = np.clip((np.arange(size) - centre) / scale + centre + shift, 0, size - 1)
    low = np.minimum(np.floor(source).astype(np.int64), size - 2)
    weight = source - low
    matrix = np.zeros((size, size))
    rows = np.arange(size)
    matrix[rows, low] = 1 - weight
    matrix[rows, low + 1] = weight
    return matrix


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.ravel().astype(np.float64)
    x = x - x.mean()
    norm = float(np.linalg.norm(x))
    return x / norm if norm > 1e-9 else x
