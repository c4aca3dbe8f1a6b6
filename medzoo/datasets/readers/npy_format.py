"""`.npy` arrays from untrusted files, bounded before numpy allocates anything.

numpy sizes its buffer from the array header's shape: a crafted header in a few hundred bytes can claim terabytes
(numpy then fails with a MemoryError traceback) or, inside a `.npz`, a highly compressed member can really hold
gigabytes of zeros. So the header is read first: the bytes it claims (shape x item size) must fit in the bytes the
file or archive member holds, and under `max_array_bytes()`; object arrays (which need pickle) are refused. Only
then does numpy read the array.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy

from medzoo.datasets.readers.registry import check_array_bytes
from medzoo.errors import DataError

HEADER_READERS = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}


def header_claim(handle: IO[bytes], held: int, source: str | Path, described: str) -> int:
    """The data bytes the `.npy` header at `handle`'s position claims, checked against `held` (the bytes of the
    file or member, header included); raises DataError naming `source` for anything numpy should not be given."""
    try:
        version = npy.read_magic(handle)
        if version not in HEADER_READERS:
            raise DataError(f"{source}: {described} is in .npy format version {version[0]}.{version[1]}, which medzoo "
                            "does not read; save it with numpy.save (format 1.0 or 2.0).")
        shape, _, dtype = HEADER_READERS[version](handle)
        header_bytes = handle.tell()
    except DataError:
        raise
    except Exception as exc:  # numpy raises ValueError, EOFError or SyntaxError on a damaged header
        raise DataError(f"{source}: {described} has no readable .npy header ({type(exc).__name__}: {exc}); the "
                        "file is truncated or corrupt.") from exc
    if dtype.hasobject:
        raise DataError(f"{source}: {described} holds Python objects ({dtype}), which would need pickle; medzoo "
                        "reads numeric arrays only.")
    claimed = math.prod(shape) * dtype.itemsize  # Python integers: no overflow whatever the header says
    if claimed > held - header_bytes:
        raise DataError(f"{source}: the header of {described} claims shape {shape} of {dtype}, {claimed:,} bytes, "
                        f"but only {max(0, held - header_bytes):,} bytes follow it; the file is truncated or "
                        "crafted. Re-download or re-export it.")
    check_array_bytes(claimed, source, f"shape {shape} of {dtype} in {described}")
    return claimed


def member_name(archive: zipfile.ZipFile, key: str) -> str:
    """The archive member behind array `key` (numpy.savez writes `KEY.npy`)."""
    names = set(archive.namelist())
    return f"{key}.npy" if f"{key}.npy" in names else key


def check_npz_members(archive: zipfile.ZipFile, keys: list[str], source: str | Path) -> int:
    """Check the headers of the arrays `keys` of an open `.npz` and return the bytes they claim together, which
    must also fit under `max_array_bytes()` (they are held in memory at once)."""
    total = 0
    for key in keys:
        info = archive.getinfo(member_name(archive, key))
        with archive.open(info) as handle:  # zipfile stops at the member's stated size while decompressing
            total += header_claim(handle, info.file_size, source, f"array '{key}'")
    check_array_bytes(total, source, f"{len(keys)} arrays together")
    return total


def npz_keys(path: Path) -> list[str]:
    """The array names of the `.npz` at `path` (its members, `.npy` dropped), from the zip directory alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [name.removesuffix(".npy") for name in archive.namelist()]
    except Exception as exc:  # not a zip, a damaged directory: zipfile raises several types
        raise DataError(f"{path}: not a readable .npz file, truncated or corrupt ({type(exc).__name__}: "
                        f"{exc}).") from exc


def read_npz_arrays(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` of the `.npz` at `path`, every header checked (`check_npz_members`) before any is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_npz_members(archive, keys, path)
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in keys}
    except DataError:
        raise
    except Exception as exc:  # a damaged zip surfaces as many types inside zipfile and numpy
        raise DataError(f"{path}: not a readable .npz file, truncated or corrupt ({type(exc).__name__}: "
                        f"{exc}).") from exc


def check_npy_file(path: Path) -> None:
    """Check the header of the `.npy` file at `path` against its size (see `header_claim`)."""
    try:
        with open(path, "rb") as handle:
            header_claim(handle, path.stat().st_size, path, "the array")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc}).") from exc
