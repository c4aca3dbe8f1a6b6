"""Per-batch intensity steps: normalisation, gamma, brightness and contrast, noise, blur, GIN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medzoo.transforms import blur, intensity, noise, random_network
from medzoo.transforms.batch_transform import (
    BatchParams,
    BatchTransform,
    _float,
    _integers,
    _select,
    _top,
    _uniform,
)
from medzoo.transforms.kernels import value_range


class Normalize(BatchTransform):
    """Per-channel (x - mean * max_pixel_value) / (std * max_pixel_value), a per-image z-score or min-max."""
    sample_twin = intensity.Normalize

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        if self.normalization == "standard":
            mpv = self.max_pixel_value or max_value or value_range(x.dtype)
            scale, shift = (torch.as_tensor(v, device=xf.device, dtype=xf.dtype)
                            for v in self.scale_shift(xf.shape[1], mpv))
            out = torch.addcmul(shift, xf, scale)
        elif self.normalization == "min_max":
            low, high = torch.aminmax(xf.flatten(1), dim=1)
            span = (high - low).view(-1, 1, 1, 1)
            # a constant image becomes 0, as on the CPU (and in MONAI's ScaleIntensity)
            scale = torch.where(span > 0, 1.0 / span, torch.zeros_like(span))
            out = (xf - low.view(-1, 1, 1, 1)) * scale
        else:
            dims = (2, 3) if self.normalization == "image_per_channel" else (1, 2, 3)
            std, mean = torch.std_mean(xf, dim=dims, correction=0, keepdim=True)
            out = ((xf - mean) / (std + intensity.IMAGE_NORM_EPS)).clamp(-intensity.IMAGE_NORM_CLIP, intensity.IMAGE_NORM_CLIP)
        return _select(params["apply"], out, xf)


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).view(-1, 1, 1, 1)


class Gamma(BatchTransform):
    """max_value * (x / max_value) ** gamma with each sample's own gamma."""
    sample_twin = intensity.Gamma

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        return {"gamma": _uniform(self.gamma_limit, shape[0], generator) / 100.0}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf, top = _float(x), _top(self, max_value, x)
        out = (xf / top).pow(_column(params["gamma"], xf)) * top
        return _select(params["apply"], out, xf)


class BrightnessContrast(BatchTransform):
    """clip(alpha * x + beta, 0, max_value) with each sample's own alpha and beta."""
    sample_twin = intensity.BrightnessContrast

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        return {"alpha": 1.0 + _uniform(self.contrast_limit, shape[0], generator),
                "beta": _uniform(self.brightness_limit, shape[0], generator)}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf, top = _float(x), _top(self, max_value, x)
        beta = _column(params["beta"], xf)
        beta = beta * (top if self.brightness_by_max else xf.mean(dim=(1, 2, 3), dtype=torch.float64,
                                                                    keepdim=True).to(xf.dtype))
        out = (xf * _column(params["alpha"], xf) + beta).clamp(0.0, top)
        return _select(params["apply"], out, xf)


class GaussianNoise(BatchTransform):
    """clip(x + max_value * (mean + std * N(0, 1)), 0, max_value), the noise drawn on the batch's device.

    With `clip=False` the noise is added unclipped (MONAI's RandGaussianNoise). On a GPU this is the cheap
    place for noise: the loader's workers then hand over the stack without it.
    """
    sample_twin = noise.GaussianNoise

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        """Per-sample mean/std and a seed for the device noise; params["noise"] replays given noise."""
        return {"mean": _uniform(self.mean_range, shape[0], generator),
                "std": _uniform(self.std_range, shape[0], generator),
                "seed": torch.randint(0, 2**62, (shape[0],), generator=generator)}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf, top = _float(x), _top(self, max_value, x)
        noise = params.get("noise")
        if noise is None:
            device_generator = torch.Generator(device=xf.device).manual_seed(int(params["seed"][0]))
            shape = (xf.shape[0], *self.noise_shape(tuple(xf.shape[1:])))
            noise = torch.randn(shape, generator=device_generator, device=xf.device, dtype=xf.dtype)
        noise = noise.to(xf.device, xf.dtype)
        out = xf + (noise * _column(params["std"], xf) + _column(params["mean"], xf)) * top
        if self.clip:
            out = out.clamp(0.0, top)
        return _select(params["apply"], out, xf)


class GaussianBlur(BatchTransform):
    """Separable Gaussian blur with each sample's own kernel, as two grouped convolutions over the batch."""
    sample_twin = blur.GaussianBlur

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        sigma = _uniform(self.sigma_limit, shape[0], generator)
        ksize = _integers(self.blur_limit[0], self.blur_limit[1], shape[0], generator)
        # same size rule as multichannel.gaussian_kernel_1d: 0 -> from sigma, even -> odd
        ksize = torch.where(ksize == 0, torch.floor(sigma * 3.5).long() * 2 + 1, ksize)
        return {"sigma": sigma, "ksize": ksize + 1 - ksize % 2}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        batch, channels, height, width = xf.shape
        sigma, ksize = params["sigma"].double().cpu(), params["ksize"].cpu()
        radius = int(ksize.max()) // 2
        # kernels of smaller samples are zero-padded to the largest size, which leaves their sums unchanged
        taps = torch.arange(-radius, radius + 1, dtype=torch.float64)[None]
        kernel = torch.exp(-0.5 * (taps / sigma[:, None]) ** 2) * (taps.abs() <= (ksize[:, None] // 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(xf.device, xf.dtype)
        kernel = kernel.repeat_interleave(channels, dim=0)
        planes = xf.reshape(1, batch * channels, height, width)
        size = 2 * radius + 1
        planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="reflect"), kernel.view(-1, 1, 1, size),
                          groups=batch * channels)
        planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="reflect"), kernel.view(-1, 1, size, 1),
                          groups=batch * channels)
        return _select(params["apply"], planes.view(batch, channels, height, width), xf)


def _random_network(planes: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                   negative_slope: float) -> torch.Tensor:
    """Run one shallow random network per plane: (N, 1, H, W) planes, layer weights (N, out, in, 3, 3) and
    biases (N, out); leaky ReLU between layers, borders mirrored (reflect-101). One grouped convolution per
    layer runs every plane's own network at once."""
    count, _, height, width = planes.shape
    hidden = planes.reshape(1, count, height, width)
    for layer, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        outputs, inputs = weight.shape[1:3]
        hidden = F.conv2d(F.pad(hidden, (1, 1, 1, 1), mode="reflect"), weight.reshape(count * outputs, inputs, 3, 3),
                          bias.reshape(-1), groups=count)
        if layer < len(weights) - 1:
            hidden = F.leaky_relu(hidden, negative_slope)
    return hidden.reshape(count, 1, height, width)


class RandomIntensityNetwork(BatchTransform):
    """GIN with each sample's own random network, all of them run as one grouped convolution per layer."""
    sample_twin = random_network.RandomIntensityNetwork

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        batch, widths = shape[0], self.widths()
        params = {"alpha": _uniform(self.alpha, batch, generator)}
        sizes = torch.tensor(self.kernel_sizes)
        ring = torch.ones(3, 3)
        ring[1, 1] = 0
        for layer in range(self.layers):
            size = sizes[_integers(0, len(self.kernel_sizes) - 1, batch, generator)]
            weight = torch.randn(batch, widths[layer + 1], widths[layer], 3, 3, generator=generator)
            # a 1 x 1 kernel keeps only the centre of its 3 x 3 draw
            params[f"weight{layer}"] = weight * torch.where((size == 1).view(-1, 1, 1, 1, 1), 1 - ring, 1)
            params[f"bias{layer}"] = torch.randn(batch, widths[layer + 1], generator=generator)
        return params

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        batch, channels, height, width = xf.shape
        std, mean = torch.std_mean(xf, dim=(1, 2, 3), correction=0, keepdim=True)
        std = torch.where(std > 1e-6 * mean.abs().clamp(min=1.0), std, torch.ones_like(std))  # flat: shift only
        weights = [params[f"weight{i}"].to(xf.dtype).repeat_interleave(channels, 0) for i in range(self.layers)]
        biases = [params[f"bias{i}"].to(xf.dtype).repeat_interleave(channels, 0) for i in range(self.layers)]
        planes = ((xf - mean) / std).reshape(-1, 1, height, width)
        styled = _random_network(planes, weights, biases, self.negative_slope).view(batch, channels, height, width)
        # scaled to the standardised sample's energy (its sum of squares is its size), back in input units
        energy = styled.square().sum(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12)
        alpha = _column(params["alpha"], xf)
        mixed = (1 - alpha) * xf + alpha * std * torch.sqrt(channels * height * width / energy) * styled + alpha * mean
        return _select(params["apply"], mixed, xf)


