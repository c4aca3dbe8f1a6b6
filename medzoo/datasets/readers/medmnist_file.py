"""MedMNIST `.npz` files: a whole dataset (images and labels of the official train / val / test splits) in one
archive, the `medmnist` entry of `READERS` (kind `dataset`: `read_medmnist` returns split arrays, not a `Volume`).

`.npz` is also the NumPy reader's suffix; `is_medmnist` tells them apart by the archive's member names alone.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import numpy as np

from medzoo.datasets.readers.npy_format import npz_keys, read_npz_arrays
from medzoo.errors import DataError

SPLITS = ("train", "val", "test")
SINGLE_LABEL = "binary or multi-class, labels of shape (N,) or (N, 1)"
# The members every MedMNIST file holds (as `NAME.npy` inside the zip archive).
MEDMNIST_KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))


def is_medmnist(path: str | Path) -> bool:
    """True when `path` is a zip archive (a .npz) holding every MedMNIST member (`train_images`, `train_labels`,
    ... `test_labels`); only the archive's directory is read, no array."""
    try:
        if not stat.S_ISREG(Path(path).stat().st_mode):  # a FIFO would block the read
            return False
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile):
        return False  # no file, not a zip, a damaged directory (zipfile: "zip file version 7.8" on garbage)
    return set(MEDMNIST_KEYS) <= members


def _labels(path: Path, split: str, labels: np.ndarray, count: int) -> np.ndarray:
    """(N,) int64 class indices from (N,) or (N, 1) labels; multi-label and non-integer labels refused."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 2 and labels.shape[0] == count:
        raise DataError(f"{path}: multi-label MedMNIST sets are not supported ({split}_labels has shape "
                        f"{labels.shape}: one 0/1 column per finding, as in ChestMNIST); medzoo trains single-label "
                        f"sets: {SINGLE_LABEL}.")
    if labels.ndim != 1 or len(labels) != count:
        raise DataError(f"{path}: {split}_labels has shape {labels.shape} for {count} images; expected ({count},) "
                        f"or ({count}, 1): {SINGLE_LABEL}.")
    if labels.dtype.kind not in "iub" and not (labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0)):
        raise DataError(f"{path}: {split}_labels are {labels.dtype} values that are not whole numbers; "
                        "expected class indices 0..K-1.")
    if count and labels.min() < 0:
        raise DataError(f"{path}: {split}_labels holds {labels.min()}; class indices run from 0 to K-1.")
    return labels.astype(np.int64)


def read_medmnist(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Images (N x H x W[x 3] or N x D x H x W) and labels (N,) per split; labels of shape (N, 1) are flattened."""
    if not path.is_file():
        raise DataError(f"MedMNIST file not found: {path}. Set data.path to a MedMNIST .npz file.")
    keys = list(MEDMNIST_KEYS)
    present = set(npz_keys(path))
    missing = [key for key in keys if key not in present]
    if missing:
        raise DataError(f"{path}: not a MedMNIST file, missing key(s) {', '.join(missing)}; expected "
                        f"{', '.join(keys)}.")
    members = read_npz_arrays(path, keys)  # every header checked against its member and the memory first
    arrays = {split: (members[f"{split}_images"], members[f"{split}_labels"]) for split in SPLITS}
    shapes = {split: images.shape[1:] for split, (images, _) in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{path}: the splits' images differ in shape ({shapes}); one size per file expected.")
    return {split: (images, _labels(path, split, labels, len(images))) for split, (images, labels) in arrays.items()}
