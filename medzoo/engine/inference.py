"""Inference with a checkpoint's own preprocessing: files in, class probabilities out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.datasets.images import IMAGE_EXTENSIONS, decode_image, to_channels
from medzoo.errors import DataError
from medzoo.transforms.layout import to_channel_first
from medzoo.transforms.spec import TransformSpec


def list_inputs(inputs: str | Path) -> list[Path]:
    """One image file, or every image file below a folder (sorted)."""
    path = Path(inputs).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            return files
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {path}; set inputs=FILE_OR_DIR.")
    raise DataError(f"inputs not found: {path}. Set inputs=FILE_OR_DIR.")


@dataclass
class Preprocessor:
    """The `pre` and `eval` transforms stored in a checkpoint's card, applied to one file."""

    card: dict[str, Any]

    def __post_init__(self) -> None:
        self.spec = TransformSpec.from_card(self.card)
        self.pipeline = self.spec.pipeline("eval")

    def array(self, pixels: np.ndarray) -> torch.Tensor:
        """An H x W x C uint8 image -> the model's C x H x W float32 input."""
        pixels = to_channel_first(to_channels(pixels, self.card["in_chans"]))
        return torch.from_numpy(self.pipeline(self.spec.preprocess(pixels)))

    def file(self, path: Path) -> torch.Tensor:
        """Decode `path` and preprocess it."""
        return self.array(decode_image(path).pixels)


@torch.no_grad()
def probabilities(model: torch.nn.Module, batch: torch.Tensor, autocast) -> np.ndarray:
    """Softmax probabilities of `model` for a batch on the model's device."""
    device = next(model.parameters()).device
    with autocast():
        return torch.softmax(model(batch.to(device)).float(), dim=1).cpu().numpy()
