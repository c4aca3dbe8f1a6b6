"""Per-batch degradations whose per-sample version is albumentations' own step: Downscale, JPEG/WebP."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medzoo.errors import ConfigError
from medzoo.transforms.batch_transform import (
    BatchParams,
    BatchTransform,
    _float,
    _integers,
    _select,
    _top,
    _uniform,
)
from medzoo.transforms.kernels import value_pair


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
        self.scale_range = value_pair(scale_range, "Downscale.scale_range")
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
        low, high = (int(v) for v in value_pair(quality_range, "ImageCompression.quality_range"))
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


