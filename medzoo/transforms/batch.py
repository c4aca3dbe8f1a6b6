"""Per-batch versions of `medzoo.transforms.multichannel` on (B, C, H, W) tensors, on any device.

Each class takes the same arguments as its per-sample namesake (it inherits them) and gives the same
result for the same parameters; every sample of a batch draws its own parameters, including whether it
fires (probability `p`). Parameters are drawn on the CPU from a seeded `torch.Generator`, so a seed gives
the same parameters on every device; the work itself is vectorised over the batch (one `grid_sample` for
all affine warps, one grouped convolution for all blurs).

`stack_params` turns per-sample parameters of the CPU transforms into batch parameters, so that a CPU
transform and its batch version can be run on the same parameters and compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medzoo.errors import ConfigError
from medzoo.transforms import multichannel as mc
from medzoo.transforms.multichannel import value_range

BatchParams = dict[str, torch.Tensor]

_PADDING = {"constant": "zeros", "reflect": "reflection", "replicate": "border"}


def stack_params(params: Sequence[Mapping[str, Any]], device: torch.device | str = "cpu") -> BatchParams:
    """Batch parameters (every sample fires) from one CPU `sample_params` dict per sample.

    Arrays of different lengths (CoarseDropout's holes) are padded with zeros, which are empty holes.
    """
    out: BatchParams = {}
    for key in params[0] if params else ():
        values = [np.asarray(p[key]) for p in params]
        if values[0].ndim and len({v.shape for v in values}) > 1:
            longest = max(v.shape[0] for v in values)
            values = [np.concatenate([v, np.zeros((longest - len(v), *v.shape[1:]), v.dtype)])
                      for v in values]
        out[key] = torch.as_tensor(np.stack(values), device=device)
    out["apply"] = torch.ones(len(params), dtype=torch.bool, device=device)
    return out


def _uniform(bounds: tuple[float, float], size: int, generator: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def _integers(low: int, high: int, size: int | Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Integers uniform in [low, high] (both included); `high` may be a tensor."""
    span = torch.as_tensor(high, dtype=torch.float64) - low + 1
    shape = (size,) if isinstance(size, int) else tuple(size)
    return (low + torch.floor(torch.rand(shape, generator=generator, dtype=torch.float64) * span)).long()


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.float()


def _select(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per sample: `new` where the transform fired, `old` (unchanged) where it did not."""
    return torch.where(mask.view(-1, 1, 1, 1), new, old.to(new.dtype))


def _top(transform: Any, max_value: float | None, x: torch.Tensor) -> float:
    return getattr(transform, "max_value", None) or max_value or value_range(x.dtype)


class BatchTransform:
    """Mixin that turns a per-sample transform into a batch one with a seeded CPU `torch.Generator`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.generator = torch.Generator()
        self.generator.seed()

    def set_random_state(self, seed: int | None = None,
                         state: torch.Generator | None = None) -> BatchTransform:
        """Reseed the parameter generator; `state` installs a ready CPU generator instead."""
        if state is not None:
            self.generator = state
        elif seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        return self

    def set_seed(self, seed: int | None) -> BatchTransform:
        """Reseed the parameter generator so that the draws depend only on `seed`."""
        return self.set_random_state(seed)

    def sample_params(self, generator: torch.Generator, shape: Sequence[int],
                      device: torch.device | str = "cpu") -> BatchParams:
        """Every sample's parameters for a (B, C, H, W) batch, plus `apply`: whether each sample fires."""
        batch = int(shape[0])
        fires = torch.rand(batch, generator=generator, dtype=torch.float64) < self.p
        params = self.sample_batch(generator, tuple(int(s) for s in shape))
        params["apply"] = fires
        return {key: value.to(device) for key, value in params.items()}

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        """The transform's own parameters for every sample (CPU tensors with a leading batch axis)."""
        return {}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        """Apply given batch parameters to a (B, C, H, W) tensor."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, max_value: float | None = None) -> torch.Tensor:
        """Transform a (B, C, H, W) batch, each sample with its own parameters."""
        mc._check_chw(x, ndim=4)
        return self.apply(x, self.sample_params(self.generator, x.shape, x.device), max_value)


class HorizontalFlip(BatchTransform, mc.HorizontalFlip):
    """Mirror left-right the samples that fire."""

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        return _select(params["apply"], x.flip(-1), x)


class VerticalFlip(BatchTransform, mc.VerticalFlip):
    """Mirror top-bottom the samples that fire."""

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        return _select(params["apply"], x.flip(-2), x)


class RandomRotate90(BatchTransform, mc.RandomRotate90):
    """Rotate each sample by its own k x 90 degrees counter-clockwise; odd k needs square images."""

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        return {"k": _integers(0, 3, shape[0], generator)}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        k = torch.where(params["apply"], params["k"], torch.zeros_like(params["k"]))
        if x.shape[-1] != x.shape[-2]:
            if bool((k % 2 == 1).any()):
                raise ValueError(f"RandomRotate90 on a batch needs square images, got {tuple(x.shape[-2:])}: "
                                 "a quarter turn would give samples of different shapes")
        out = x
        for turns in (1, 2, 3):
            out = torch.where((k == turns).view(-1, 1, 1, 1), torch.rot90(x, turns, (-2, -1)), out)
        return out


def _pixel_to_normalised(height: int, width: int) -> torch.Tensor:
    """3 x 3 matrix from pixel coordinates to grid_sample's [-1, 1] (align_corners=False)."""
    return torch.tensor([[2.0 / width, 0.0, 1.0 / width - 1.0],
                         [0.0, 2.0 / height, 1.0 / height - 1.0],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)


def affine_theta(angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
                 height: int, width: int, scale_y: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 2, 3) `affine_grid` matrices (output -> input, normalised) of `multichannel.affine_matrix`."""
    rad = torch.deg2rad(angle.double().cpu())
    sx = scale.double().cpu()
    sy = sx if scale_y is None else scale_y.double().cpu()
    a, b = torch.cos(rad) * sx, torch.sin(rad) * sy
    c, d = -torch.sin(rad) * sx, torch.cos(rad) * sy
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    forward = torch.zeros(angle.shape[0], 3, 3, dtype=torch.float64)
    forward[:, 0, 0], forward[:, 0, 1] = a, b
    forward[:, 1, 0], forward[:, 1, 1] = c, d
    forward[:, 0, 2] = cx + tx.double().cpu() - a * cx - b * cy
    forward[:, 1, 2] = cy + ty.double().cpu() - c * cx - d * cy
    forward[:, 2, 2] = 1.0
    norm = _pixel_to_normalised(height, width)
    return (norm @ torch.linalg.inv(forward) @ torch.linalg.inv(norm))[:, :2]


class Affine(BatchTransform, mc.Affine):
    """Rotate, scale and translate each sample with its own matrix, in one grid_sample for the batch."""

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        batch, _, height, width = shape
        params = {"angle": _uniform(self.rotate, batch, generator),
                  "scale": _uniform(self.scale, batch, generator),
                  "tx": _uniform(self.translate_percent, batch, generator) * width,
                  "ty": _uniform(self.translate_percent, batch, generator) * height}
        if self.whole_pixels:
            params["tx"], params["ty"] = torch.trunc(params["tx"]), torch.trunc(params["ty"])
        if not self.keep_ratio:
            params["scale_y"] = _uniform(self.scale, batch, generator)
        return params

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        height, width = xf.shape[-2:]
        theta = affine_theta(params["angle"], params["scale"], params["tx"], params["ty"], height, width,
                             params.get("scale_y"))
        grid = F.affine_grid(theta.to(xf.device, xf.dtype), list(xf.shape), align_corners=False)
        # grid_sample pads with zeros only; shifting by `fill` makes the padding equal `fill`
        shift = self.fill if self.border_mode == "constant" and self.fill != 0.0 else 0.0
        out = F.grid_sample(xf - shift if shift else xf, grid, mode=self.interpolation,
                            padding_mode=_PADDING[self.border_mode], align_corners=False)
        return _select(params["apply"], out + shift if shift else out, xf)


def _crop_grid(y0: torch.Tensor, x0: torch.Tensor, h: torch.Tensor, w: torch.Tensor, size: tuple[int, int],
               in_size: tuple[int, int], interpolation: str, device: torch.device) -> torch.Tensor:
    """grid_sample grid that resizes each sample's crop box like cv2.resize: edges clamp inside the crop."""
    axes = []
    for start, extent, out_len, in_len in ((x0, w, size[1], in_size[1]), (y0, h, size[0], in_size[0])):
        start, extent = start.double().cpu()[:, None], extent.double().cpu()[:, None]
        dst = torch.arange(out_len, dtype=torch.float64)[None]
        step = extent / out_len
        if interpolation == "nearest":
            src = torch.minimum(torch.floor(dst * step), extent - 1)
        else:
            src = torch.minimum(((dst + 0.5) * step - 0.5).clamp(min=0.0), extent - 1)
        axes.append((2.0 * (src + start) + 1.0) / in_len - 1.0)
    gx, gy = axes
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return grid.to(device)


class Resize(BatchTransform, mc.Resize):
    """Resize every sample to height x width (the batch always resizes, whatever `p`)."""

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        if self.interpolation == "nearest":
            return F.interpolate(xf, size=(self.height, self.width), mode="nearest")
        return F.interpolate(xf, size=(self.height, self.width), mode="bilinear", align_corners=False,
                             antialias=False)


class RandomResizedCrop(BatchTransform, mc.RandomResizedCrop):
    """Each sample's own random crop resized to `size`, all in one grid_sample.

    Samples that do not fire are resized whole, as on the CPU, so that the batch keeps one shape.
    """

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        batch, _, height, width = shape
        tries, area = 10, height * width
        target = _uniform((self.scale[0] * area, self.scale[1] * area), batch * tries, generator)
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = torch.exp(_uniform(log_ratio, batch * tries, generator))
        w = torch.round(torch.sqrt(target * aspect)).view(batch, tries)
        h = torch.round(torch.sqrt(target / aspect)).view(batch, tries)
        starts = torch.rand(batch, tries, 2, generator=generator, dtype=torch.float64)
        valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = valid.double().argmax(dim=1)  # the first try that fits, as the CPU loop takes
        pick = torch.arange(batch)
        w, h, starts = w[pick, first], h[pick, first], starts[pick, first]
        y0 = torch.floor((height - h + 1) * starts[:, 0])
        x0 = torch.floor((width - w + 1) * starts[:, 1])
        fw, fh = self.fallback_size(height, width)  # when no try fits
        found = valid.any(dim=1)
        return {"y0": torch.where(found, y0, float((height - fh) // 2)).long(),
                "x0": torch.where(found, x0, float((width - fw) // 2)).long(),
                "h": torch.where(found, h, float(fh)).long(), "w": torch.where(found, w, float(fw)).long()}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        height, width = xf.shape[-2:]
        fires = params["apply"].cpu()
        whole = {"y0": 0, "x0": 0, "h": height, "w": width}
        box = [torch.where(fires, params[key].cpu(), whole[key]) for key in ("y0", "x0", "h", "w")]
        grid = _crop_grid(*box, self.size, (height, width), self.interpolation, xf.device)
        return F.grid_sample(xf, grid.to(xf.dtype), mode=self.interpolation, padding_mode="border",
                             align_corners=False)


class Normalize(BatchTransform, mc.Normalize):
    """Per-channel (x - mean * max_pixel_value) / (std * max_pixel_value), a per-image z-score or min-max."""

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
            out = ((xf - mean) / (std + mc.IMAGE_NORM_EPS)).clamp(-mc.IMAGE_NORM_CLIP, mc.IMAGE_NORM_CLIP)
        return _select(params["apply"], out, xf)


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).view(-1, 1, 1, 1)


class Gamma(BatchTransform, mc.Gamma):
    """max_value * (x / max_value) ** gamma with each sample's own gamma."""

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        return {"gamma": _uniform(self.gamma_limit, shape[0], generator) / 100.0}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf, top = _float(x), _top(self, max_value, x)
        out = (xf / top).pow(_column(params["gamma"], xf)) * top
        return _select(params["apply"], out, xf)


class BrightnessContrast(BatchTransform, mc.BrightnessContrast):
    """clip(alpha * x + beta, 0, max_value) with each sample's own alpha and beta."""

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


class GaussianNoise(BatchTransform, mc.GaussianNoise):
    """clip(x + max_value * (mean + std * N(0, 1)), 0, max_value), the noise drawn on the batch's device.

    With `clip=False` the noise is added unclipped (MONAI's RandGaussianNoise). On a GPU this is the cheap
    place for noise: the loader's workers then hand over the stack without it.
    """

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


class GaussianBlur(BatchTransform, mc.GaussianBlur):
    """Separable Gaussian blur with each sample's own kernel, as two grouped convolutions over the batch."""

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


class RandomIntensityNetwork(BatchTransform, mc.RandomIntensityNetwork):
    """GIN with each sample's own random network, all of them run as one grouped convolution per layer."""

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


class CoarseDropout(BatchTransform, mc.CoarseDropout):
    """Fill each sample's own random rectangles with `fill` in every channel."""

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        batch, _, height, width = shape
        most = self.num_holes_range[1]
        count = _integers(self.num_holes_range[0], most, batch, generator)
        sizes = []
        for (low, high), extent in ((self.hole_height_range, height), (self.hole_width_range, width)):
            if high >= 1:
                sizes.append(_integers(int(low), int(min(high, extent)), (batch, most), generator))
            else:
                fractions = _uniform((low, high), batch * most, generator).view(batch, most)
                sizes.append((extent * fractions).long())
        heights, widths = sizes
        starts = torch.rand(2, batch, most, generator=generator, dtype=torch.float64)
        y0 = torch.floor(starts[0] * (height - heights + 1))
        x0 = torch.floor(starts[1] * (width - widths + 1))
        holes = torch.stack([y0.long(), x0.long(), y0.long() + heights, x0.long() + widths], dim=-1)
        used = torch.arange(most)[None, :] < count[:, None]
        return {"holes": holes * used[..., None]}  # unused holes become empty boxes

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        holes = params["holes"].to(xf.device)
        rows = torch.arange(xf.shape[-2], device=xf.device).view(1, 1, -1, 1)
        cols = torch.arange(xf.shape[-1], device=xf.device).view(1, 1, 1, -1)
        y0, x0, y1, x1 = (holes[..., i, None, None] for i in range(4))
        inside = ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)).any(dim=1, keepdim=True)
        inside = inside & params["apply"].view(-1, 1, 1, 1)
        return xf.masked_fill(inside, self.fill)


class _Quality(BatchTransform):
    """Base of the degradations that have no per-sample medzoo twin: albumentations' own step is the
    per-sample version, with the same parameter names."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"{type(self).__name__}: p must be in [0, 1], got {p!r}")
        self.p = float(p)
        super().__init__()


class Downscale(_Quality):
    """albumentations' Downscale with its default nearest/nearest pair: each sample shrunk by its own factor
    and enlarged back, as one index gather for the batch (OpenCV's INTER_NEAREST index rule, exactly)."""

    def __init__(self, scale_range: Sequence[float] = (0.25, 0.25), p: float = 0.5):
        super().__init__(p)
        self.scale_range = mc._range(scale_range, "Downscale.scale_range")
        if not 0.0 < self.scale_range[0] <= self.scale_range[1] < 1.0:
            raise ConfigError(f"Downscale.scale_range must lie in (0, 1), got {scale_range!r}")

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        return {"scale": _uniform(self.scale_range, shape[0], generator)}

    @staticmethod
    def source_index(length: int, scale: torch.Tensor) -> torch.Tensor:
        """(B, length) source pixel of each output pixel: cv2.resize(fx=scale) down, then back to `length`."""
        scale = scale.double().cpu()[:, None]
        small = torch.round(length * scale).clamp(min=1)  # cv2 rounds the shrunk size (saturate_cast)
        out = torch.arange(length, dtype=torch.float64)[None]
        up = torch.minimum(torch.floor(out * (1.0 / (length / small))), small - 1)
        return torch.minimum(torch.floor(up * (1.0 / scale)), torch.tensor(length - 1.0)).long()

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        batch, _, height, width = xf.shape
        rows = self.source_index(height, params["scale"]).to(xf.device)
        cols = self.source_index(width, params["scale"]).to(xf.device)
        picked = xf.gather(2, rows[:, None, :, None].expand(-1, xf.shape[1], -1, width))
        picked = picked.gather(3, cols[:, None, None, :].expand(-1, xf.shape[1], height, -1))
        return _select(params["apply"], picked, xf)


class ImageCompression(_Quality):
    """albumentations' ImageCompression (JPEG or WebP at a random quality) on the samples that fire.

    There is no JPEG codec on the device: those samples go to the CPU as 8-bit images, through OpenCV's
    codec (albumentations' own function, so the result is the per-sample step's), and back.
    """

    def __init__(self, compression_type: str = "jpeg", quality_range: Sequence[int] = (99, 100), p: float = 0.5):
        super().__init__(p)
        if compression_type not in ("jpeg", "webp"):
            raise ConfigError(f"ImageCompression.compression_type must be 'jpeg' or 'webp', got {compression_type!r}")
        low, high = (int(v) for v in mc._range(quality_range, "ImageCompression.quality_range"))
        if not 1 <= low <= high <= 100:
            raise ConfigError(f"ImageCompression.quality_range must lie in [1, 100], got {quality_range!r}")
        self.compression_type, self.quality_range = compression_type, (low, high)

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        return {"quality": _integers(self.quality_range[0], self.quality_range[1], shape[0], generator)}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        from albumentations.augmentations.pixel.functional import image_compression

        xf, top = _float(x), _top(self, max_value, x)
        out = xf.clone()
        suffix = ".jpg" if self.compression_type == "jpeg" else ".webp"
        for index in torch.nonzero(params["apply"].cpu()).flatten().tolist():
            pixels = (xf[index] * (255.0 / top)).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
            coded = image_compression(np.ascontiguousarray(pixels.cpu().numpy()),
                                      int(params["quality"][index]), suffix)
            coded = torch.from_numpy(coded.reshape(pixels.shape)).permute(2, 0, 1)
            out[index] = coded.to(xf.device, xf.dtype) * (top / 255.0)
        return out


class Compose:
    """Apply batch transforms in order; integer batches come back as float32 in the same units."""

    def __init__(self, transforms: Sequence[BatchTransform] = ()):
        self.transforms = list(transforms)

    def set_seed(self, seed: int) -> Compose:
        """Reseed every member deterministically from (seed, position)."""
        for position, transform in enumerate(self.transforms):
            state = np.random.SeedSequence([int(seed), position]).generate_state(2, np.uint32)
            transform.set_random_state(int(state[0]) << 32 | int(state[1]))
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a (B, C, H, W) batch; ranges follow the input dtype (255 for uint8)."""
        max_value = value_range(x.dtype)
        for transform in self.transforms:
            x = transform(x, max_value=max_value)
        return _float(x)

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
