"""Build albumentations pipelines from lists of registered steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import numpy as np
from omegaconf import DictConfig, OmegaConf

from medzoo.errors import ConfigError
from medzoo.transforms.layout import to_channel_first, to_channel_last
from medzoo.transforms.registry import build_step, split_step


def build_pipeline(steps: Sequence[Any] | None, seed: int | None = None, where: str = "transforms",
                   error: type[Exception] = ConfigError) -> A.Compose:
    """Build each step through the step registry and compose them (an empty list gives the identity)."""
    if isinstance(steps, DictConfig) or OmegaConf.is_config(steps):
        steps = OmegaConf.to_container(steps, resolve=True)
    transforms = [build_step(step, f"{where}[{i}]", error) for i, step in enumerate(steps or [])]
    for index, (step, transform) in enumerate(zip(steps or [], transforms)):
        # A.Compose would fail on any other object with an AttributeError that names no step.
        if not isinstance(transform, (A.BasicTransform, A.BaseCompose)):
            name = split_step(step, where)[0] if isinstance(step, Mapping) else type(transform).__name__
            raise error(f"{where}[{index}]: '{name}' is not an albumentations transform, and the albumentations "
                        "backend runs only those; a MONAI or medzoo.transforms.multichannel step needs backend "
                        "channel_first.")
    return A.Compose(transforms, seed=seed)


class ChannelFirstPipeline:
    """Apply an HWC albumentations pipeline to a CHW array and return a CHW float32 array."""

    def __init__(self, pipeline: A.Compose):
        self.pipeline = pipeline

    def set_seed(self, seed: int) -> None:
        """Reseed the pipeline so that a sample's augmentation depends only on (run seed, epoch, index)."""
        self.pipeline.set_random_seed(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        out = self.pipeline(image=to_channel_last(image))["image"]
        if out.ndim == 2:  # some OpenCV ops drop a singleton channel axis
            out = out[..., None]
        return to_channel_first(out).astype(np.float32, copy=False)
