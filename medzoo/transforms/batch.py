"""Per-batch versions of `medzoo.transforms.multichannel` on (B, C, H, W) tensors, on any device.

Each class takes the same arguments as its per-sample namesake (its `sample_twin`, which it holds) and gives the
same result for the same parameters; every sample of a batch draws its own parameters, including whether it
fires (probability `p`). Parameters are drawn on the CPU from a seeded `torch.Generator`, so a seed gives the
same parameters on every device; the work itself is vectorised over the batch (one `grid_sample` for all
affine warps, one grouped convolution for all blurs).

This module is their vocabulary (`medzoo.transforms.batch.NAME`); the code lives in `batch_transform` (the base,
`Compose`, `stack_params`), `batch_spatial`, `batch_intensity` and `batch_quality`.
"""

from medzoo.transforms.batch_intensity import (
    BrightnessContrast,
    Gamma,
    GaussianBlur,
    GaussianNoise,
    Normalize,
    RandomIntensityNetwork,
)
from medzoo.transforms.batch_quality import Downscale, ImageCompression
from medzoo.transforms.batch_spatial import (
    Affine,
    CoarseDropout,
    HorizontalFlip,
    RandomResizedCrop,
    RandomRotate90,
    Resize,
    VerticalFlip,
    affine_theta,
)
from medzoo.transforms.batch_transform import BatchParams, BatchTransform, Compose, stack_params

__all__ = [
    "Affine", "BatchParams", "BatchTransform", "BrightnessContrast", "CoarseDropout", "Compose", "Downscale",
    "Gamma", "GaussianBlur", "GaussianNoise", "HorizontalFlip", "ImageCompression", "Normalize",
    "RandomIntensityNetwork", "RandomResizedCrop", "RandomRotate90", "Resize", "VerticalFlip", "affine_theta",
    "stack_params",
]
