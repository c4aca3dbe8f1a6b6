"""A dataset's transforms from config: `pre` (deterministic, run once before caching), `train` and `eval`.

Every pipeline takes and returns channel-first arrays (C x H x W, or C x D x H x W). `backend` says what the
steps are: `albumentations` (2D, few channels; run on an H x W x C view inside) or `channel_first`
(medzoo.transforms.multichannel for any channel count, MONAI array transforms for volumes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from medzoo.close_names import unknown_name
from medzoo.errors import ConfigError, DataError, MedzooError
from medzoo.transforms.batch import Compose as BatchCompose
from medzoo.transforms.pipeline import ChannelFirstPipeline, build_pipeline
from medzoo.transforms.registry import as_card_steps, as_recipe_steps, build_steps, check_step
from medzoo.transforms.twins import batch_twins


class ChannelFirstCompose:
    """Channel-first steps in order (medzoo multichannel or MONAI array transforms), reseedable per sample."""

    def __init__(self, steps: Sequence[dict], where: str = "transforms", error: type[Exception] = ConfigError):
        self.steps = build_steps(steps, where, error)

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


class CardSteps:
    """A model card's steps run on one input: any failure there (each library raises its own types) is one
    DataError naming the checkpoint's steps and the input, in predict and eval alike."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], where: str):
        self.run, self.where = run, where

    def set_seed(self, seed: int) -> None:
        getattr(self.run, "set_seed", lambda _: None)(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        try:
            return self.run(image)
        except MedzooError:
            raise
        except Exception as exc:
            raise DataError(f"{self.where} fails on an input of shape {tuple(image.shape)} ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:300]}); the card's steps do not suit this input. Give "
                            "inputs like those the model was trained on, or fix the card's steps.") from exc


def _albumentations(steps: Sequence[dict], seed: int | None, where: str, error: type[Exception]) -> Callable:
    return ChannelFirstPipeline(build_pipeline(steps, seed=seed, where=where, error=error))


def _channel_first(steps: Sequence[dict], seed: int | None, where: str, error: type[Exception]) -> Callable:
    if all(isinstance(step, dict) and str(step.get("_target_", "")).startswith("medzoo.transforms.multichannel.")
           for step in steps):
        from medzoo.transforms.multichannel import Compose  # keeps the input dtype's value range across steps

        compose = Compose(build_steps(steps, where, error))
    else:
        compose = ChannelFirstCompose(steps, where, error)
    if seed is not None:
        compose.set_seed(seed)
    return compose


BACKENDS: dict[str, Callable[[Sequence[dict], int | None, str, type[Exception]], Callable]] = {
    "albumentations": _albumentations, "channel_first": _channel_first,
}



class TransformSpec:
    """The transform lists of a recipe, as plain data that can be stored in a checkpoint card: `pre` (once per
    file), per-sample `train` and `eval`. A split augmented on the device (loader.device_cache,
    loader.device_augment) runs the batch twins of `train` (medzoo.transforms.twins): one list, two places."""

    def __init__(self, pre: Sequence[Any] = (), train: Sequence[Any] = (), eval: Sequence[Any] = (),
                 where: str = "transforms", backend: str = "albumentations",
                 error: type[Exception] = ConfigError):
        if backend not in BACKENDS:
            raise error(str(unknown_name(f"{where}.backend", str(backend), BACKENDS)))
        self.backend, self.where, self.error = backend, where, error
        self.lists = {name: _plain(steps) or [] for name, steps in (("pre", pre), ("train", train), ("eval", eval))}
        for name, steps in self.lists.items():
            if not isinstance(steps, list):
                raise error(f"{where}.{name}: a list of steps expected, got {type(steps).__name__}.")
            for index, step in enumerate(steps):
                check_step(step, f"{where}.{name}[{index}]", error)
        self._pre = BACKENDS[backend](self.lists["pre"], None, f"{where}.pre", error) if self.lists["pre"] else None

    @classmethod
    def from_config(cls, cfg: Any, where: str = "transforms") -> TransformSpec:
        data = _plain(cfg) or {}
        if data.get("batch_train"):
            raise ConfigError(f"{where}.batch_train is no longer read: the per-batch steps are the twins of "
                              f"{where}.train (medzoo.transforms.twins), so the augmentation is stated once. "
                              "Remove batch_train.")
        return cls(data.get("pre", ()), data.get("train", ()), data.get("eval", ()), where,
                   data.get("backend", "albumentations"))

    @classmethod
    def from_card_steps(cls, backend: str, pre: Sequence[Any], eval: Sequence[Any], where: str) -> TransformSpec:
        """The inference steps a model card describes (`{"name", "params"}` each), checked against the step
        registry; anything else is a DataError naming `where` (the checkpoint file) and the step."""
        return cls(_card_steps(pre, f"{where}: preprocessing.pre"), eval=_card_steps(eval, f"{where}: preprocessing.eval"),
                   where=f"{where}: preprocessing", backend=backend, error=DataError)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The deterministic `pre` steps on one channel-first image, keeping its dtype (run once per file)."""
        if self._pre is None:
            return image
        run = (lambda x: self._pre(x).astype(x.dtype, copy=False)) if self.backend == "channel_first" \
            else self._pre_uint8
        return run(image) if self.error is not DataError else CardSteps(run, f"{self.where}.pre")(image)

    def _pre_uint8(self, image: np.ndarray) -> np.ndarray:
        out = self._pre.pipeline(image=np.moveaxis(image, 0, -1))["image"]
        return np.moveaxis(out if out.ndim == 3 else out[..., None], -1, 0)

    @property
    def pre_spec(self) -> str:
        """A canonical string of the `pre` steps; part of the cache key."""
        return json.dumps({"backend": self.backend, "pre": self.lists["pre"]}, sort_keys=True)

    def pipeline(self, stage: str, seed: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """The per-sample `train` or `eval` pipeline on channel-first arrays (float32 out)."""
        run = BACKENDS[self.backend](self.lists[stage], seed, f"{self.where}.{stage}", self.error)
        return run if self.error is not DataError else CardSteps(run, f"{self.where}.{stage}")

    def batch_pipeline(self) -> BatchCompose:
        """The batch twins of the `train` steps, for (B, C, H, W) tensors on any device; a step without a
        twin is a ConfigError naming it."""
        where = f"{self.where}.train"
        return BatchCompose(build_steps(batch_twins(self.lists["train"], where), f"{where} (per-batch twins)"))

    def card(self) -> dict[str, Any]:
        """What inference needs, as a model card holds it: the backend and the `pre` and `eval` steps, each a
        registered step name with plain parameters."""
        return {"backend": self.backend, "pre": as_card_steps(self.lists["pre"]),
                "eval": as_card_steps(self.lists["eval"])}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _card_steps(steps: Any, where: str) -> list[dict[str, Any]]:
    steps = list(steps) if isinstance(steps, tuple) else steps
    if not isinstance(steps, list):
        raise DataError(f"{where}: a list of steps expected.")
    for index, step in enumerate(steps):
        check_step(step, f"{where}[{index}]", DataError)
    return as_recipe_steps(steps)
