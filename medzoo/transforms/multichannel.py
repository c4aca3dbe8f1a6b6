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

This module is their vocabulary (recipes and model cards name `medzoo.transforms.multichannel.NAME`); the code
lives by topic: `spatial`, `intensity`, `noise`, `blur`, `random_network`, the base class and `Compose` in
`transform`, and the shared thread pool and block machinery in `kernels`.
"""

from medzoo.transforms.blur import GaussianBlur, gaussian_kernel_1d
from medzoo.transforms.intensity import (
    IMAGE_NORM_CLIP,
    IMAGE_NORM_EPS,
    NORMALIZATIONS,
    BrightnessContrast,
    Gamma,
    Normalize,
    min_max_scale_shift,
)
from medzoo.transforms.kernels import BORDER_MODES, INTERPOLATIONS, Params, value_range
from medzoo.transforms.noise import GaussianNoise
from medzoo.transforms.random_network import RandomIntensityNetwork
from medzoo.transforms.spatial import (
    Affine,
    CoarseDropout,
    HorizontalFlip,
    RandomResizedCrop,
    RandomRotate90,
    Resize,
    VerticalFlip,
    affine_matrix,
)
from medzoo.transforms.transform import Compose, Transform

__all__ = [
    "BORDER_MODES", "IMAGE_NORM_CLIP", "IMAGE_NORM_EPS", "INTERPOLATIONS", "NORMALIZATIONS", "Affine",
    "BrightnessContrast", "CoarseDropout", "Compose", "Gamma", "GaussianBlur", "GaussianNoise", "HorizontalFlip",
    "Normalize", "Params", "RandomIntensityNetwork", "RandomResizedCrop", "RandomRotate90", "Resize", "Transform",
    "VerticalFlip", "affine_matrix", "gaussian_kernel_1d", "min_max_scale_shift", "value_range",
]
