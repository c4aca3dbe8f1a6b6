"""Inference with a checkpoint's own preprocessing: files, volumes and DICOM series in, probabilities out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.datasets.images import IMAGE_EXTENSIONS, decode_image, to_channels
from medzoo.errors import DataError
from medzoo.transforms.layout import depth_to_channels, to_channel_first
from medzoo.transforms.spec import TransformSpec

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".npy", ".npz", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".ima")


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES) and path.suffix.lower() not in IMAGE_EXTENSIONS


def _is_dicom_series(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in DICOM_SUFFIXES for p in path.iterdir() if p.is_file())


def list_inputs(inputs: str | Path) -> list[Path]:
    """Inputs below `inputs`: image files, volume files (NIfTI, NumPy, TIFF) and DICOM series folders."""
    path = Path(inputs).expanduser()
    if path.is_file() or _is_dicom_series(path):
        return [path]
    if not path.is_dir():
        raise DataError(f"inputs not found: {path}. Set inputs=FILE_OR_DIR (an image, a volume, a DICOM folder).")
    found = [p for p in sorted(path.rglob("*"))
             if (p.is_file() and (p.suffix.lower() in IMAGE_EXTENSIONS or _is_volume(p))) or _is_dicom_series(p)]
    if not found:
        raise DataError(f"nothing to predict under {path}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}), "
                        f"volumes ({', '.join(VOLUME_SUFFIXES)}) or DICOM series folders. Set inputs=FILE_OR_DIR.")
    return found


def _to_uint8(volume: np.ndarray) -> np.ndarray:
    """Scale a volume's intensities to 0..255 (robust 0.5-99.5 % window), as 2D image models expect."""
    low, high = np.percentile(volume, [0.5, 99.5])
    scaled = (volume.astype(np.float32) - low) * (255.0 / max(float(high - low), 1e-6))
    return np.clip(scaled, 0, 255).astype(np.uint8)


@dataclass
class Preprocessor:
    """The `pre` and `eval` transforms stored in a checkpoint's card, applied the way the model was trained."""

    card: dict[str, Any]

    def __post_init__(self) -> None:
        self.spec = TransformSpec.from_card(self.card)
        self.pipeline = self.spec.pipeline("eval")
        # how the training data was laid out: the data config, or for a prepared cache its prepare settings
        self.data = {**self.card.get("data", {}).get("prepared", {}),
                     **{k: v for k, v in self.card.get("config", {}).get("data", {}).items() if v is not None}}

    def array(self, image: np.ndarray) -> torch.Tensor:
        """One channel-first array, as stored in the model's cache -> the model's float32 input."""
        return torch.from_numpy(self.pipeline(self.spec.preprocess(image)))

    def image(self, pixels: np.ndarray) -> torch.Tensor:
        """An H x W x C uint8 image -> the model's input."""
        return self.array(to_channel_first(to_channels(pixels, self.card["in_chans"])))

    def file(self, path: Path) -> torch.Tensor:
        """Decode a 2D image file and preprocess it."""
        return self.image(decode_image(path).pixels)

    def items(self, path: Path) -> list[tuple[str, torch.Tensor]]:
        """(name, model input) pairs for one input: an image, or a volume / DICOM series as the model
        expects it (3D model: the volume; 2.5D model: slices as channels; 2D model: one item per slice)."""
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            return [(str(path), self.file(path))]
        from medzoo.datasets.readers import read_volume

        volume = read_volume(path, self.data.get("reader", "auto"), **self.data.get("reader_kwargs", {})).array
        if volume.ndim == 3:  # a 2D multichannel stack (C, H, W)
            return [(str(path), self.array(volume))]
        if self.card["spatial_dims"] == 3:
            return [(str(path), self.array(volume))]
        if self.data.get("layout") == "slices":
            stack = depth_to_channels(volume, self.card["in_chans"], self.data.get("depth_mode", "resample"))
            return [(str(path), self.array(stack))]
        slices = _to_uint8(volume)
        return [(f"{path}#slice{index:03d}", self.image(np.moveaxis(slices[:, index], 0, -1)))
                for index in range(slices.shape[1])]


@torch.no_grad()
def probabilities(model: torch.nn.Module, batch: torch.Tensor, autocast) -> np.ndarray:
    """Softmax probabilities of `model` for a batch on the model's device."""
    device = next(model.parameters()).device
    with autocast():
        return torch.softmax(model(batch.to(device)).float(), dim=1).cpu().numpy()
