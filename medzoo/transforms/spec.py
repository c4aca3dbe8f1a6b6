"""A dataset's transforms from config: `pre` (deterministic, run once before caching), `train` and `eval`.

Every pipeline takes and returns channel-first arrays (C x H x W, or C x D x H x W). `backend` says what the
steps are: `albumentations` (2D, few channels; run on an H x W x C view inside) or `channel_first`
(medzoo.transforms.multichannel for any channel count, MONAI array transforms for volumes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from medzoo.errors import ConfigError
from medzoo.naming import unknown_name
from medzoo.transforms.batch import Compose as BatchCompose
from medzoo.transforms.pipeline import ChannelFirstPipeline, build_pipeline

# A checkpoint's card is untrusted input: only these packages may be named by its `_target_`s.
SAFE_TARGET_PREFIXES = ("albumentations.", "medzoo.transforms.", "monai.transforms.")


def _targets(node: Any) -> Iterator[str]:
    """Every `_target_` in a config tree: steps may nest others (albumentations.OneOf takes a list)."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield str(node["_target_"])
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _targets(value)


def check_targets(steps: Sequence[Any], where: str) -> None:
    """Refuse any `_target_` outside the transform packages, at any depth (a card must not be able to run
    arbitrary code), and any step that names no target at all."""
    for step in steps:
        if not isinstance(step, dict) or "_target_" not in step:
            raise ConfigError(f"{where}: every transform step needs a `_target_`; got {step!r}")
        for target in _targets(step):
            if not target.startswith(SAFE_TARGET_PREFIXES):
                raise ConfigError(f"{where}: transform target {target!r} is not allowed; transforms must come "
                                  f"from {', '.join(SAFE_TARGET_PREFIXES)}")


class ChannelFirstCompose:
    """Channel-first steps in order (medzoo multichannel or MONAI array transforms), reseedable per sample."""

    def __init__(self, steps: Sequence[dict]):
        self.steps = [instantiate(step) for step in steps]

    def set_seed(self, seed: int) -> None:
        for position, step in enumerate(self.steps):
            if hasattr(step, "set_random_state"):
                step.set_random_state(seed=int(np.random.SeedSequence([seed, position]).generate_state(1)[0]))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        out = image
        for step in self.steps:
            out = step(out)
        if hasattr(out, "numpy"):  # MONAI returns (Meta)Tensors
            out = out.detach().cpu().numpy() if hasattr(out, "detach") else out.numpy()
        return np.ascontiguousarray(out, dtype=np.float32)


def _albumentations(steps: Sequence[dict], seed: int | None) -> Callable:
    return ChannelFirstPipeline(build_pipeline(steps, seed=seed))


def _channel_first(steps: Sequence[dict], seed: int | None) -> Callable:
    if all(str(step.get("_target_", "")).startswith("medzoo.transforms.multichannel.") for step in steps):
        from medzoo.transforms.multichannel import Compose  # keeps the input dtype's value range across steps

        compose = Compose(steps)
    else:
        compose = ChannelFirstCompose(steps)
    if seed is not None:
        compose.set_seed(seed)
    return compose


BACKENDS: dict[str, Callable[[Sequence[dict], int | None], Callable]] = {
    "albumentations": _albumentations, "channel_first": _channel_first,
}


BATCH_TARGET_PREFIX = "medzoo.transforms.batch."


class TransformSpec:
    """The transform lists of a recipe, as plain data that can be stored in a checkpoint card: `pre` (once per
    file), per-sample `train` and `eval`, and `batch_train`, the per-batch (device) version of `train` that
    a split held on the device (data.device_cache) uses instead."""

    def __init__(self, pre: Sequence[Any] = (), train: Sequence[Any] = (), eval: Sequence[Any] = (),
                 where: str = "transforms", backend: str = "albumentations", batch_train: Sequence[Any] = ()):
        if backend not in BACKENDS:
            raise unknown_name("transforms.backend", backend, BACKENDS)
        self.backend = backend
        self.lists = {name: _plain(steps) for name, steps in (("pre", pre), ("train", train), ("eval", eval),
                                                               ("batch_train", batch_train))}
        outside = [str(step.get("_target_")) for step in self.lists["batch_train"]
                   if not str(step.get("_target_", "")).startswith(BATCH_TARGET_PREFIX)]
        if outside:
            raise ConfigError(f"{where}.batch_train: {', '.join(outside)} are not per-batch transforms; use "
                              f"{BATCH_TARGET_PREFIX}* steps there.")
        for name, steps in self.lists.items():
            check_targets(steps, f"{where}.{name}")
        self._pre = BACKENDS[backend](self.lists["pre"], None) if self.lists["pre"] else None

    @classmethod
    def from_config(cls, cfg: Any, where: str = "transforms") -> TransformSpec:
        data = _plain(cfg) or {}
        return cls(data.get("pre", ()), data.get("train", ()), data.get("eval", ()), where,
                   data.get("backend", "albumentations"), data.get("batch_train") or ())

    @classmethod
    def from_card(cls, card: dict) -> TransformSpec:
        steps = card["preprocessing"]
        return cls(steps["pre"], eval=steps["eval"], where="checkpoint card",
                   backend=steps.get("backend", "albumentations"))

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The deterministic `pre` steps on one channel-first image, keeping its dtype (run once per file)."""
        if self._pre is None:
            return image
        return self._pre(image).astype(image.dtype, copy=False) if self.backend == "channel_first" \
            else self._pre_uint8(image)

    def _pre_uint8(self, image: np.ndarray) -> np.ndarray:
        out = self._pre.pipeline(image=np.moveaxis(image, 0, -1))["image"]
        return np.moveaxis(out if out.ndim == 3 else out[..., None], -1, 0)

    @property
    def pre_spec(self) -> str:
        """A canonical string of the `pre` steps; part of the cache key."""
        return json.dumps({"backend": self.backend, "pre": self.lists["pre"]}, sort_keys=True)

    def pipeline(self, stage: str, seed: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """The per-sample `train` or `eval` pipeline on channel-first arrays (float32 out)."""
        return BACKENDS[self.backend](self.lists[stage], seed)

    def batch_pipeline(self) -> BatchCompose:
        """The per-batch `batch_train` steps, for (B, C, H, W) tensors on any device."""
        return BatchCompose([instantiate(step) for step in self.lists["batch_train"]])

    def card(self) -> dict[str, Any]:
        """What inference needs: the backend and the `pre` and `eval` steps."""
        return {"backend": self.backend, "pre": self.lists["pre"], "eval": self.lists["eval"]}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
