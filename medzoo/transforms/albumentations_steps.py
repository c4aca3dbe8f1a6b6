"""`medzoo.transforms.multichannel` steps inside an albumentations pipeline (the `albumentations` backend).

A step here draws its parameters from the pipeline's own generator, so `A.Compose(seed=...)` and
`set_random_seed` reproduce it like any albumentations transform, and it runs the channel-first transform
on a channel-first view of the H x W (x C) image.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np

from medzoo.transforms import multichannel as mc


class ChannelFirstStep(A.ImageOnlyTransform):
    """Base: `step_class(**kwargs)` applied to the image; albumentations decides whether it fires (`p`)."""

    step_class: type[mc.Transform]

    def __init__(self, p: float = 0.5, **kwargs: Any):
        super().__init__(p=p)
        self.step_kwargs = kwargs
        self.step = self.step_class(p=1.0, **kwargs)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        channels = params["shape"][2] if len(params["shape"]) == 3 else 1
        return {"step_params": self.step.sample_params(self.random_generator, (channels, height, width))}

    def apply(self, img: np.ndarray, step_params: dict[str, Any], **params: Any) -> np.ndarray:
        planes = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
        out = self.step.apply(planes, step_params)
        return out[0] if img.ndim == 2 else np.moveaxis(out, 0, -1)

    def get_transform_init_args(self) -> dict[str, Any]:
        return dict(self.step_kwargs)


class RandomIntensityNetwork(ChannelFirstStep):
    """GIN random intensity and texture mapping; arguments as `multichannel.RandomIntensityNetwork`."""

    step_class = mc.RandomIntensityNetwork
