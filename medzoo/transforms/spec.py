"""A dataset's transforms from config: `pre` (deterministic, run once before caching), `train` and `eval`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from medzoo.errors import ConfigError
from medzoo.transforms.pipeline import ChannelFirstPipeline, build_pipeline

# A checkpoint's card is untrusted input: only these packages may be named by its `_target_`s.
SAFE_TARGET_PREFIXES = ("albumentations.", "medzoo.transforms.")


def check_targets(steps: Sequence[Any], where: str) -> None:
    """Refuse any `_target_` outside the transform packages (a card must not be able to run arbitrary code)."""
    for step in steps:
        target = step.get("_target_", "") if isinstance(step, dict) else ""
        if not target.startswith(SAFE_TARGET_PREFIXES):
            raise ConfigError(f"{where}: transform target {target!r} is not allowed; transforms must come from "
                              f"{' or '.join(SAFE_TARGET_PREFIXES)}")


class TransformSpec:
    """The three transform lists of a recipe, as plain data that can be stored in a checkpoint card."""

    def __init__(self, pre: Sequence[Any] = (), train: Sequence[Any] = (), eval: Sequence[Any] = (),
                 where: str = "transforms"):
        self.lists = {name: _plain(steps) for name, steps in (("pre", pre), ("train", train), ("eval", eval))}
        for name, steps in self.lists.items():
            check_targets(steps, f"{where}.{name}")
        self._pre = build_pipeline(self.lists["pre"])

    @classmethod
    def from_config(cls, cfg: Any, where: str = "transforms") -> TransformSpec:
        data = _plain(cfg) or {}
        return cls(data.get("pre", ()), data.get("train", ()), data.get("eval", ()), where)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The deterministic `pre` steps on one H x W x C uint8 image (cached, so run once per file)."""
        out = self._pre(image=image)["image"]
        return out if out.ndim == 3 else out[..., None]

    @property
    def pre_spec(self) -> str:
        """A canonical string of the `pre` steps; part of the cache key."""
        return json.dumps(self.lists["pre"], sort_keys=True)

    def pipeline(self, stage: str, seed: int | None = None) -> ChannelFirstPipeline:
        """The per-sample `train` or `eval` pipeline on C x H x W arrays."""
        return ChannelFirstPipeline(build_pipeline(self.lists[stage], seed=seed))

    def card(self) -> dict[str, list]:
        """What inference needs: the `pre` and `eval` steps."""
        return {"pre": self.lists["pre"], "eval": self.lists["eval"]}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
