"""NumPy `.npy` (memory-mapped) and `.npz` arrays -> `(C, H, W)` or `(C, D, H, W)` via `to_channel_first`.

`channel_axis` names the channel axis of the stored array (0 for CHW/CDHW, -1 for HWC/DHWC); a 2-D array
is one channel. A `.npy` file is memory-mapped and the result is a view of it whenever the layout allows
(always with the default `contiguous=False`), so a 1000 x 256 x 256 integer stack opens without reading it
(float data is scanned once for NaN/Inf unless `allow_nonfinite=True`); pass `mmap=False` to load it into
memory. Files carry no geometry: pass `spacing=` or get 1.0 per axis (`meta["spacing_known"]` is False).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medzoo.close_names import unknown_name
from medzoo.datasets.readers.npy_format import check_npy_file, npz_keys, read_npz_arrays
from medzoo.datasets.readers.registry import Volume, check_finite, make_volume
from medzoo.errors import DataError
from medzoo.transforms.layout import to_channel_first


def _channel_first(array: np.ndarray, path: Path, channel_axis: int | None, contiguous: bool,
                   spacing: Sequence[float] | None, allow_nonfinite: bool, **extra) -> Volume:
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: array of dtype {array.dtype} is not numeric image data.")
    # Scanned in the stored layout, so a memory-mapped file is read front to back once.
    check_finite(array, path, allow_nonfinite)
    if array.ndim == 2:
        out = array[None]
    elif array.ndim in (3, 4):
        if channel_axis is None:
            raise DataError(f"{path}: a {array.ndim}-D array needs channel_axis (0 for channels first, -1 for "
                            "channels last); channel_axis=None only suits 2-D arrays.")
        if not -array.ndim <= channel_axis < array.ndim:
            raise DataError(f"{path}: channel_axis={channel_axis} is out of range for shape {array.shape}.")
        out = to_channel_first(array, channel_axis, contiguous=contiguous)
    else:
        raise DataError(f"{path}: array of shape {array.shape} is not an image: expected 2-D (H, W), 3-D "
                        "(C, H, W) or 4-D (C, D, H, W) in some axis order.")
    return make_volume(out, path, spacing, None, channel_axis=channel_axis, stored_shape=tuple(array.shape),
                       **extra)


def read_npy(path: str | Path, *, channel_axis: int | None = 0, mmap: bool = True, contiguous: bool = False,
             spacing: Sequence[float] | None = None, allow_nonfinite: bool = False) -> Volume:
    """Read a `.npy` array, memory-mapped read-only by default, with its channel axis moved to the front.

    Args:
        channel_axis: the channel axis of the stored array (0: CHW / CDHW, -1: HWC / DHWC).
        contiguous: copy into a C-contiguous array when the moved layout is not one already.
    """
    path = Path(path)
    if not mmap:  # a memory map allocates nothing, and numpy checks its length against the file
        check_npy_file(path)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # a damaged header or zip surfaces as many types inside numpy and zipfile
        raise DataError(f"{path}: not a readable .npy file, truncated or corrupt ({type(exc).__name__}: "
                        f"{exc}).") from exc
    return _channel_first(array, path, channel_axis, contiguous, spacing, allow_nonfinite, memory_mapped=mmap)


def read_npz(path: str | Path, *, key: str | None = None, channel_axis: int | None = 0,
             spacing: Sequence[float] | None = None, allow_nonfinite: bool = False) -> Volume:
    """Read one array of a `.npz` archive (`key=`, needed when it holds several) with channels first."""
    path = Path(path)
    keys = npz_keys(path)
    if key is None:
        if len(keys) != 1:
            raise DataError(f"{path}: holds {len(keys)} arrays ({', '.join(keys) or 'none'}); pass key=NAME to "
                            "choose one.")
        key = keys[0]
    if key not in keys:
        raise DataError(f"{path}: {unknown_name('array key', key, keys)}")
    array = read_npz_arrays(path, [key])[key]  # its header is checked against the member's size first
    # An npz member is decompressed into memory anyway, so a contiguous result costs little.
    return _channel_first(array, path, channel_axis, True, spacing, allow_nonfinite, key=key)
