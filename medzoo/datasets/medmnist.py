"""MedMNIST `.npz` files (2D and 3D) with their official train / val / test splits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from medzoo.datasets.base import DataSplits
from medzoo.datasets.cache import CachedSplit
from medzoo.datasets.fetch import default_data_home as data_home
from medzoo.errors import ConfigError, DataError
from medzoo.transforms.layout import depth_to_channels

BUILTIN_PREFIX = "builtin:"
SPLITS = ("train", "val", "test")


def resolve_npz(path: str) -> Path:
    """`builtin:NAME` names a file shipped with medzoo; anything else is a filesystem path."""
    if path.startswith(BUILTIN_PREFIX):
        return Path(str(resources.files("medzoo.datasets") / "builtin" / f"{path[len(BUILTIN_PREFIX):]}.npz"))
    return Path(path).expanduser()


def read_medmnist(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Images (N x H x W[x 3] or N x D x H x W) and labels (N,) per split; labels of shape (N, 1) are flattened."""
    if not path.is_file():
        raise DataError(f"MedMNIST file not found: {path}. Set data.path to a MedMNIST .npz file.")
    try:
        with np.load(path) as npz:
            arrays = {split: (npz[f"{split}_images"], npz[f"{split}_labels"]) for split in SPLITS}
    except KeyError as exc:
        raise DataError(f"{path}: not a MedMNIST file, missing key {exc}; expected "
                        "train_images, train_labels, val_images, val_labels, test_images, test_labels.") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read .npz ({exc}).") from exc
    out = {}
    for split, (images, labels) in arrays.items():
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{path}: {split}_labels has shape {labels.shape}; expected ({len(images)},) or "
                            f"({len(images)}, 1) (multi-label MedMNIST sets are not supported yet).")
        out[split] = (images, labels.astype(np.int64))
    return out


LAYOUTS = ("image", "volume", "slices")


class MedMNISTSource:
    """A MedMNIST file as 2D images (C x H x W), 3D volumes (1 x D x H x W) or 2.5D slice stacks (D x H x W).

    `path` is a file, `builtin:NAME`, or null for `$MEDZOO_DATA/medmnist/<file>`.
    """

    def __init__(self, name: str, classes: Sequence[str], path: str | None = None, file: str | None = None,
                 layout: str = "image", channels: int | None = None, depth_mode: str = "resample",
                 **loader_settings):
        if layout not in LAYOUTS:
            raise ConfigError(f"data.layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        self.name, self.path, self.file, self.class_names = name, path, file or f"{name}.npz", list(classes)
        self.layout, self.channels, self.depth_mode = layout, channels, depth_mode
        self.spatial_dims = 3 if layout == "volume" else 2
        self.loader_settings = loader_settings

    def resolve(self) -> Path:
        """The .npz file: data.path, else `$MEDZOO_DATA/medmnist/<data.file>`."""
        if self.path:
            return resolve_npz(self.path)
        candidate = data_home() / "medmnist" / self.file
        if not candidate.is_file():
            raise DataError(f"{self.file} not found: data.path is not set and {candidate} does not exist. Set "
                            f"data.path=PATH/TO/{self.file}, or MEDZOO_DATA to a folder holding medmnist/{self.file}.")
        return candidate

    def load(self, preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
             preprocess_spec: str = "") -> DataSplits:
        """Read the three official splits into channel-first uint8 arrays."""
        path = self.resolve()
        splits = {}
        for split, (images, labels) in read_medmnist(path).items():
            images = self._channel_first(images, path)
            if preprocess is not None:
                images = np.stack([preprocess(image) for image in images])
            if labels.max(initial=0) >= len(self.class_names):
                raise DataError(f"{path}: label {labels.max()} but data.classes lists {len(self.class_names)} names.")
            keys = [f"{split}/{i}" for i in range(len(labels))]
            splits[split] = CachedSplit(np.ascontiguousarray(images), labels, keys)
        fingerprint = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        return DataSplits(**splits, classes=self.class_names, spatial_dims=self.spatial_dims,
                          fingerprint=fingerprint, report={"source": str(path)})

    def _channel_first(self, images: np.ndarray, path: Path) -> np.ndarray:
        if self.layout in ("volume", "slices"):
            if images.ndim != 4:
                raise DataError(f"{path}: 3D MedMNIST images must be N x D x H x W, got {images.shape}; "
                                "use data.layout=image for 2D files.")
            if self.layout == "volume":
                return images[:, None]
            return np.stack([depth_to_channels(v[None], self.channels, self.depth_mode) for v in images])
        if images.ndim == 3:
            return images[:, None]
        if images.ndim == 4:
            return np.moveaxis(images, -1, 1)
        raise DataError(f"{path}: 2D MedMNIST images must be N x H x W or N x H x W x C, got {images.shape}.")
