"""Gaussian noise for many-channel stacks: float32 Box-Muller over raw SFC64 bits, in seeded streams."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medzoo.transforms import kernels
from medzoo.transforms.kernels import (
    Params,
    map_planes,
    run_blocks,
    value_pair,
    value_range,
)
from medzoo.transforms.transform import Transform

# Noise is drawn in independent streams of this many values, so that threads can share the work while
# the result stays the same whatever the number of threads.
NOISE_BLOCK = 1 << 18
# Inside a stream, normal values are made this many at a time, so that the chunk and its temporaries stay
# in the L2 cache while the Box-Muller chain of ufuncs runs over them.
NOISE_CHUNK = 1 << 15
_ONE_BITS = np.uint32(0x3F800000)  # exponent bits of 1.0f: OR-ed with 23 random mantissa bits, [1, 2)
_TWO_PI = np.float32(2.0 * math.pi)


class GaussianNoise(Transform):
    """clip(x + max_value * (mean + std * N(0, 1)), 0, max_value) (albumentations' GaussNoise).

    Args:
        std_range: (low, high) of the noise standard deviation as a fraction of `max_value`; (0, s) draws
            it as MONAI's RandGaussianNoise(std=s) does.
        mean_range: noise mean as a fraction of `max_value`.
        per_channel: independent noise per channel; False shares one noise plane across channels.
        clip: clip the result to [0, max_value] (albumentations); False adds the noise unclipped, as MONAI
            does, which z-scored or other zero-centred inputs need.
    """

    def __init__(self, std_range: Sequence[float] = (0.2, 0.44), mean_range: Sequence[float] = (0.0, 0.0),
                 per_channel: bool = True, max_value: float | None = None, clip: bool = True, p: float = 0.5):
        super().__init__(p)
        self.std_range = value_pair(std_range, "GaussianNoise.std_range")
        self.mean_range = value_pair(mean_range, "GaussianNoise.mean_range")
        self.per_channel, self.max_value, self.clip = bool(per_channel), max_value, bool(clip)

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        """The noise itself is drawn in `apply` from `seed`; pass params["noise"] to replay given noise."""
        return {"mean": float(rng.uniform(*self.mean_range)), "std": float(rng.uniform(*self.std_range)),
                "seed": int(rng.integers(0, 2**63))}

    def noise_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the standard normal field: (C, H, W), or (1, H, W) when shared across channels."""
        return tuple(shape) if self.per_channel else (1, *shape[-2:])

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        top = np.float32(self.max_value or max_value or value_range(array.dtype))
        scale, offset = np.float32(params["std"] * top), np.float32(params["mean"] * top)
        clip_top = top if self.clip else None
        given = params.get("noise")
        if not self.per_channel:
            plane = given if given is not None else _normal(params["seed"], array.shape[-1] * array.shape[-2])
            plane = np.asarray(plane, np.float32).reshape(array.shape[-2:]) * scale + offset

            def shared(src: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
                np.add(src, plane, out=out)
                if clip_top is not None:
                    np.clip(out, 0, clip_top, out=out)

            return map_planes(array, inplace, shared, out)

        out = _noise_target(array, inplace, out)
        # the noise is added to `out` in place when it already holds the input (a float32 buffer of ours, or
        # a converted copy of a strided view), and to the input read directly otherwise
        source = (out if out is array or not array.flags.c_contiguous else array).reshape(-1)
        flat, size = out.reshape(-1), out.size
        blocks = -(-size // NOISE_BLOCK)
        seeds = np.random.SeedSequence(params["seed"]).generate_state(blocks, np.uint64)
        replay = None if given is None else np.asarray(given, np.float32).reshape(-1)

        def per_pixel(first: int, last: int) -> None:
            for block in range(first, last):
                start, stop = block * NOISE_BLOCK, min((block + 1) * NOISE_BLOCK, size)
                if replay is None:
                    _add_normal(np.random.SFC64(int(seeds[block])), flat[start:stop], scale, offset,
                                clip_top, source[start:stop])
                    continue
                noise = replay[start:stop] * scale
                if offset:
                    noise += offset
                np.add(source[start:stop], noise, out=flat[start:stop])
                if clip_top is not None:
                    np.clip(flat[start:stop], 0, clip_top, out=flat[start:stop])

        run_blocks(blocks, per_pixel, 1, NOISE_BLOCK)
        return out


def _noise_target(array: np.ndarray, inplace: bool, out: np.ndarray | None) -> np.ndarray:
    """The contiguous float32 array that GaussianNoise writes: `array` itself when allowed, else a new one.

    A strided view (a flip or rotation of the cache) is first converted into the new array, so that the
    noise pass can then run over flat memory.
    """
    flags = array.flags
    if inplace and array.dtype == np.float32 and flags.writeable and flags.c_contiguous:
        return array
    if not flags.c_contiguous:
        return map_planes(array, False, lambda source, block, start, stop: np.copyto(block, source), out)
    return kernels.new_output(array.shape, out)


def _uniform_1_2(bits: np.random.BitGenerator, count: int) -> np.ndarray:
    """`count` (even) float32 values uniform in [1, 2): 23 random mantissa bits under the exponent of 1."""
    raw = bits.random_raw(count // 2).view(np.uint32)
    raw >>= 9
    raw |= _ONE_BITS
    return raw.view(np.float32)


def _add_normal(bits: np.random.BitGenerator, out: np.ndarray, scale: float, offset: float = 0.0,
               top: float | None = None, source: np.ndarray | None = None) -> np.ndarray:
    """out = clip(source + offset + scale * N(0, 1), 0, top), float32 noise made by Box-Muller.

    `out` and `source` are flat; `source` None means 0 and `top` None means no clip; `source` may be `out`.
    Each pair of 23-bit uniforms (u, v) gives two independent normals r cos(2 pi v) and r sin(2 pi v),
    r = sqrt(-2 ln u). NumPy's vectorised float32 log, sqrt, sin and cos over raw SFC64 bits, a cache-sized
    chunk at a time, beat torch's normal_ (its uniforms come from a scalar Mersenne Twister) and NumPy's
    float32 ziggurat (one call per value) on one core. The tails reach 5.6 standard deviations
    (u >= 2**-23), as with any float32 uniform.
    """
    size = out.size
    scale2, offset, cosine_buffer = np.float32(-2.0 * float(scale) ** 2), np.float32(offset), None
    for start in range(0, size, NOISE_CHUNK):
        stop = min(start + NOISE_CHUNK, size)
        pairs = (stop - start + 1) // 2
        uniform = _uniform_1_2(bits, 2 * pairs)
        radius, angle = uniform[:pairs], uniform[pairs:]
        np.subtract(np.float32(2.0), radius, out=radius)  # (0, 1]: log stays finite
        np.log(radius, out=radius)
        radius *= scale2
        np.sqrt(radius, out=radius)  # scale * sqrt(-2 ln u)
        angle *= _TWO_PI  # [2 pi, 4 pi) is one full turn: the same sines and cosines as [0, 2 pi)
        if cosine_buffer is None or cosine_buffer.size < pairs:
            cosine_buffer = np.empty(pairs, np.float32)
        cosine = np.cos(angle, out=cosine_buffer[:pairs])
        np.sin(angle, out=angle)
        cosine *= radius
        angle *= radius
        halves = ((start, start + pairs, cosine), (start + pairs, stop, angle[:stop - start - pairs]))
        for first, last, noise in halves:
            if source is None:
                out[first:last] = noise
            else:
                np.add(source[first:last], noise, out=out[first:last])
        block = out[start:stop]
        if offset:
            block += offset
        if top is not None:
            np.clip(block, 0, top, out=block)
    return out


def _normal(seed: int, size: int) -> np.ndarray:
    """`size` standard normal float32 values from `seed`."""
    return _add_normal(np.random.SFC64(seed % 2**64), np.empty(size, np.float32), 1.0)
