"""Batch mixing regularisers: each mixes a training batch with a shuffled copy of itself, with soft targets.

- `mixup` (Zhang et al., ICLR 2018): images and targets blended, lam * a + (1 - lam) * b.
- `cutmix` (Yun et al., ICCV 2019): a box of the shuffled image pasted in, targets weighted by the areas.

lam ~ Beta(alpha, alpha); a batch is mixed with probability `p`. `torch.nn.CrossEntropyLoss` takes the soft
targets as they are (with label smoothing and class weights). Draws come from torch's global generator, which
the run seeds and its resume state saves, so a resumed run mixes as an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from medzoo.close_names import unknown_name
from medzoo.errors import ConfigError


class BatchMix:
    """Base: draws lam and a permutation; subclasses say how images mix and what share each target gets."""

    def __init__(self, alpha: float = 1.0, p: float = 1.0):
        if float(alpha) <= 0:
            raise ConfigError(f"trainer.mix.alpha must be > 0 (the Beta distribution's parameter), got {alpha!r}")
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"trainer.mix.p must be in [0, 1], got {p!r}")
        self.alpha, self.p = float(alpha), float(p)
        self.beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, integer targets) -> (mixed images, soft targets of shape (B, num_classes))."""
        soft = F.one_hot(targets, num_classes).to(torch.float32)
        if len(targets) < 2 or float(torch.rand(())) >= self.p:
            return images, soft
        lam = float(self.beta.sample())
        order = torch.randperm(len(targets)).to(images.device)
        mixed, lam = self.mix(images, images[order], lam)
        return mixed, lam * soft + (1.0 - lam) * soft[order]

    def mix(self, images: torch.Tensor, shuffled: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
        """The mixed images and the share of the first target in them."""
        raise NotImplementedError


class MixUp(BatchMix):
    def mix(self, images: torch.Tensor, shuffled: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
        return images * lam + shuffled * (1.0 - lam), lam


class CutMix(BatchMix):
    def mix(self, images: torch.Tensor, shuffled: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
        """Paste a box covering about 1 - lam of every spatial axis' product (2D and 3D), centred at random;
        lam becomes the share of the image left uncovered after the box is clipped to the borders."""
        sizes = images.shape[2:]
        side = (1.0 - lam) ** (1.0 / len(sizes))
        region = []
        for size in sizes:
            centre, half = int(torch.randint(size, ())), int(size * side) // 2
            region.append(slice(max(centre - half, 0), min(centre + half, size)))
        mixed = images.clone()
        box = (slice(None), slice(None), *region)
        mixed[box] = shuffled[box]
        covered = math.prod(s.stop - s.start for s in region) / math.prod(sizes)
        return mixed, 1.0 - covered


MIXERS: dict[str, type[BatchMix]] = {"mixup": MixUp, "cutmix": CutMix}


def build_mixer(settings: Mapping[str, Any] | None) -> BatchMix | None:
    """The recipe's `trainer.mix` ({name, alpha, p}); None when its name is null."""
    if not settings or settings.get("name") in (None, "none"):
        return None
    name = settings["name"]
    if name not in MIXERS:
        raise unknown_name("trainer.mix.name", name, MIXERS)
    return MIXERS[name](alpha=settings.get("alpha", 1.0), p=settings.get("p", 1.0))
