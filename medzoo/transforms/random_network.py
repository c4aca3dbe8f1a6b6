"""GIN: a random shallow convolutional network as an intensity and texture augmentation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from medzoo.errors import ConfigError
from medzoo.transforms import kernels
from medzoo.transforms.kernels import (
    Params,
    run_blocks,
    stack_stats,
    value_pair,
)
from medzoo.transforms.transform import Transform


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
        self.alpha = value_pair(alpha, "RandomIntensityNetwork.alpha")
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
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        mean, std = stack_stats(array)
        std = std if std > 1e-6 * max(abs(mean), 1.0) else 1.0  # a flat stack: only the shift matters
        owned = inplace and array.dtype == np.float32 and array.flags.writeable
        out = array if owned else kernels.new_output(array.shape, out)
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

        run_blocks(array.shape[0], work, 1, array.shape[1] * array.shape[2] * 4 * self.channels * self.layers)
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
