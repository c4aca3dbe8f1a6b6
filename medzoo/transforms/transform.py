"""The base of the per-sample transforms, and the `Compose` that runs them on a (C, H, W) array."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medzoo.errors import ConfigError
from medzoo.transforms.kernels import Params, check_chw, value_range


class Transform:
    """Base of the per-sample transforms: a probability `p` and a private `numpy.random.Generator`."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"{type(self).__name__}: p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = np.random.default_rng()

    def set_random_state(self, seed: int | None = None,
                         state: np.random.Generator | None = None) -> Transform:
        """Reseed the private generator (MONAI's name); `state` installs a ready generator instead."""
        self.rng = state if state is not None else np.random.default_rng(seed)
        return self

    def set_seed(self, seed: int | None) -> Transform:
        """Reseed the private generator so that the output depends only on `seed`."""
        return self.set_random_state(seed)

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Params:
        """Draw this transform's random parameters for one (C, H, W) array."""
        return {}

    def apply(self, array: np.ndarray, params: Params, max_value: float | None = None,
              inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """Apply with given parameters.

        Args:
            inplace: `array` may be overwritten when it is float32.
            out: a float32 buffer a new result of its shape may be written into (`kernels.new_output`);
                check `result is out` to know whether it was.
        """
        raise NotImplementedError

    def skip(self, array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """What a call that does not fire (probability 1 - p) returns."""
        return array

    def __call__(self, array: np.ndarray, max_value: float | None = None, inplace: bool = False,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Transform one (C, H, W) array with probability `p` (`inplace` and `out` as in `apply`)."""
        check_chw(array)
        if self.p < 1.0 and not self.rng.random() < self.p:
            return self.skip(array, out=out)
        return self.apply(array, self.sample_params(self.rng, array.shape), max_value, inplace, out=out)

    def __repr__(self) -> str:
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n, None)!r}' for n in names)})"


class Compose:
    """Apply transforms in order to a (C, H, W) array and return a contiguous float32 (C, H, W) array.

    `set_seed(seed)` reseeds every member from (seed, position), so a sample's augmentation depends only
    on the seed the engine derives from (run seed, epoch, index). Steps may be given as `_target_` dicts.
    """

    takes_out = True  # __call__ accepts out=: a dataset may have the result written into a batch slot

    def __init__(self, transforms: Sequence[Transform | Mapping[str, Any]] = ()):
        self.transforms = [_instantiate(step) for step in transforms]

    def set_seed(self, seed: int) -> Compose:
        """Reseed every member deterministically from `seed`."""
        for position, transform in enumerate(self.transforms):
            stream = np.random.SeedSequence([int(seed), position])
            transform.set_random_state(state=np.random.default_rng(stream))
        return self

    def set_random_state(self, seed: int) -> Compose:
        """MONAI's name for `set_seed`."""
        return self.set_seed(seed)

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Run every transform; steps after the first copy work in place on the pipeline's own buffer.

        Args:
            image: the (C, H, W) input; never written.
            out: a C-contiguous float32 buffer for the result (a batch slot). The first step that makes a new
                array of its shape writes there directly and later steps work on it in place; a result of
                the same shape made elsewhere is copied in. A result of another shape is returned as a new
                array and `out` is left as it was.
        """
        check_chw(image)
        max_value = value_range(image.dtype)
        if out is not None and (out.dtype != np.float32 or not out.flags.c_contiguous
                                or not out.flags.writeable or np.may_share_memory(out, image)):
            raise ValueError("Compose: out must be a writable C-contiguous float32 array apart from the input, "
                             f"got {out.dtype} {out.shape}")
        result, offered = image, out  # `out` is offered to each step until one writes its result there
        for transform in self.transforms:
            # the caller's array (or a view of it) is never written; a fresh result may be
            owned = not np.may_share_memory(result, image)
            result = transform(result, max_value=max_value, inplace=owned, out=offered)
            if result is offered:
                offered = None
        if out is None or result.shape != out.shape:
            return np.ascontiguousarray(result, dtype=np.float32)
        if result is not out:
            np.copyto(out, result)
        return out

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def _instantiate(step: Transform | Mapping[str, Any]) -> Transform:
    if not isinstance(step, Mapping):
        return step
    from medzoo.transforms.registry import build_step  # the one builder of steps: names from its table only

    return build_step(dict(step), "Compose.transforms")
