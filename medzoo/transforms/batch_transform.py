"""The base of the per-batch versions of `medzoo.transforms.multichannel` on (B, C, H, W) tensors, on any device.

Each class takes the same arguments as its per-sample namesake (it inherits them) and gives the same
result for the same parameters; every sample of a batch draws its own parameters, including whether it
fires (probability `p`). Parameters are drawn on the CPU from a seeded `torch.Generator`, so a seed gives
the same parameters on every device; the work itself is vectorised over the batch (one `grid_sample` for
all affine warps, one grouped convolution for all blurs).

`stack_params` turns per-sample parameters of the CPU transforms into batch parameters, so that a CPU
transform and its batch version can be run on the same parameters and compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from medzoo.transforms.kernels import check_chw, value_range
from medzoo.transforms.transform import Transform

BatchParams = dict[str, torch.Tensor]

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
    """A per-batch step: its per-sample twin (`sample_twin`) holds the parameters, a seeded CPU
    `torch.Generator` draws them for every sample of a batch.

    The constructor takes the twin's arguments and builds the twin with them, so both check the same settings
    and the batch step reads `self.scale`, `self.p` ... from the twin (attribute lookup falls through to it).
    A step without a medzoo twin (`sample_twin = None`) sets its own parameters.
    """

    sample_twin: type[Transform] | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        self.twin = self.sample_twin(*args, **kwargs) if self.sample_twin is not None else None
        self.generator = torch.Generator()
        self.generator.seed()

    def __getattr__(self, name: str) -> Any:
        # only called for names this object lacks: the twin's parameters and helpers (fallback_size ...)
        twin = self.__dict__.get("twin")
        if twin is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(twin, name)

    def __repr__(self) -> str:
        if self.twin is None:
            return f"{type(self).__name__}(p={self.p!r})"
        return f"{type(self).__name__}{repr(self.twin)[len(type(self.twin).__name__):]}"

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
        check_chw(x, ndim=4)
        return self.apply(x, self.sample_params(self.generator, x.shape, x.device), max_value)




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
