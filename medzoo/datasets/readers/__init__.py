"""Readers for volumes and slice stacks: NIfTI, DICOM series, TIFF, NumPy -> channel-first `Volume`.

`read_volume(path)` picks the reader by suffix (a folder is a DICOM series); `READERS` lists them all, and
`register_reader` adds one of your own.
"""

from __future__ import annotations

import importlib
from typing import Any

from medzoo.datasets.readers.registry import (
    READERS,
    ReaderSpec,
    Volume,
    check_finite,
    make_volume,
    read_volume,
    register_reader,
)

# The per-format functions import their library (nibabel, pydicom, tifffile) only when first used.
_LAZY = {
    "read_nifti": "nifti", "read_nifti_channels": "nifti", "read_dicom_series": "dicom",
    "read_tiff": "tiff", "read_npy": "numpy_io", "read_npz": "numpy_io",
}

__all__ = ["READERS", "ReaderSpec", "Volume", "check_finite", "make_volume", "read_volume", "register_reader", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
