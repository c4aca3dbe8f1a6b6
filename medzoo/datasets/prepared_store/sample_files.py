"""The prepared cache's array store: one `.npy` per sample (written atomically, CRC-32 checked) and the
signatures of its sources; what a file must look like to be kept."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.download import sha256_file
from medzoo.errors import DataError

log = logging.getLogger(__name__)

FORMAT = "medzoo-prepared"
FORMAT_VERSION = 1
SAMPLES = "samples"
VERIFY = ("size", "full")
# Files are checksummed in blocks of this size: large enough for full speed, small enough to stay in cache.
BLOCK = 16 * 2**20
# Errors list at most this many files; the rest are counted.
LISTED = 10


def samples_folder(root: Path) -> Path:
    """`root/samples`, refused when it is a symbolic link: prepare writes and deletes files there, and entries
    are checked to stay inside it, so a link would carry both to a folder outside the cache."""
    folder = root / SAMPLES
    if folder.is_symlink():
        raise DataError(f"{folder}: a symbolic link (to {os.readlink(folder)}), not a folder of the cache; "
                        "refusing to read or write samples through it. Remove the link and run `medzoo "
                        f"prepare ... out={root}` again (or choose another out=DIR).")
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: a file, where the cache keeps its samples folder; move it away and run `medzoo "
                        f"prepare ... out={root}` again (or choose another out=DIR).")
    return folder


def make_samples_folder(root: Path) -> Path:
    """`samples_folder(root)`, created with its parents; a path that cannot be a folder is one DataError."""
    folder = samples_folder(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # out= or one of its parents is a file, or not writable
        raise DataError(f"{root}: cannot make the cache folder there ({exc.strerror or type(exc).__name__}); choose "
                        "another out=DIR.") from exc
    return folder


def file_name(key: str) -> str:
    # readable, and unique even when two keys differ only in characters that are replaced
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[-80:] or "sample"
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npy"


def write_npy(path: Path, array: np.ndarray) -> tuple[int, str]:
    """Write `array` C-contiguous and native-endian to `path` via a temp file; return (bytes, crc32 hex)."""
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    tmp = path.with_name(path.name + ".tmp")
    crc = zlib.crc32(header.getvalue())
    # Written and checksummed block by block from the (possibly memory-mapped) array: no second copy,
    # no second read of the file. No fsync: whatever a crash leaves is caught by the size and CRC checks.
    data = memoryview(array.reshape(-1)).cast("B") if array.size else memoryview(b"")
    with open(tmp, "wb") as handle:
        handle.write(header.getvalue())
        for start in range(0, len(data), BLOCK):
            block = data[start:start + BLOCK]
            crc = zlib.crc32(block, crc)
            handle.write(block)
    os.replace(tmp, path)
    return len(header.getvalue()) + len(data), f"{crc:08x}"


def file_crc32(path: Path) -> str:
    """CRC-32 of a file's bytes, hex."""
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a `.npy` header, reading only the header."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        if fortran:
            raise ValueError("Fortran-ordered array; the cache stores C order")
        return tuple(shape), dtype, handle.tell()


def _source_files(path: Path) -> list[Path]:
    # The DICOM reader reads the files directly inside a series folder, not subfolders.
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


def source_signature(path: Path) -> str:
    """A cheap change detector for a file or folder: size and mtime of every file (no bytes read)."""
    digest = hashlib.sha256()
    for file in _source_files(path):
        stat = file.stat()
        digest.update(f"{file.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def source_sha256(path: Path) -> str:
    """sha256 of a file; for a folder, sha256 over `name<TAB>sha256` lines of the files in it, sorted."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in _source_files(path):
        digest.update(f"{file.name}\t{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def meta_value(value: Any) -> Any:
    """A JSON-safe copy of a reader meta value (tuples and numpy scalars become lists and numbers)."""
    if isinstance(value, (list, tuple)):
        return [meta_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value



def sample_problem(entry: dict, file: Path, verify: str) -> str | None:
    """None when `file` matches its manifest entry, else what is wrong with it."""
    try:
        size = file.stat().st_size
    except (FileNotFoundError, NotADirectoryError):  # NotADirectoryError: a path through a file
        return "missing"
    except OSError as exc:  # a symbolic-link loop, no permission
        return f"unreadable ({exc.strerror or exc})"
    if size != entry["bytes"]:
        return f"{size} bytes, the manifest says {entry['bytes']} (truncated or overwritten)"
    try:
        shape, dtype, _ = npy_header(file)
    except (OSError, ValueError) as exc:
        return f"unreadable .npy header ({exc})"
    if list(shape) != list(entry["shape"]) or str(dtype) != entry["dtype"]:
        return f"holds {str(dtype)} {list(shape)}, the manifest says {entry['dtype']} {entry['shape']}"
    if verify == "full":
        crc = file_crc32(file)
        if crc != entry["crc32"]:
            return f"crc32 {crc}, the manifest says {entry['crc32']} (damaged bytes)"
    return None



def check_samples(root: Path, manifest: dict, verify: str, workers: int | None = None) -> list[str]:
    """What is wrong with the cache files against their manifest entries, one line per bad file."""
    entries = manifest["samples"]
    workers = workers or min(8, os.cpu_count() or 1)

    # Threads: file reads and zlib.crc32 release the GIL, so files are checked in parallel.
    def check(entry: dict) -> str | None:
        problem = sample_problem(entry, root / entry["file"], verify)
        return None if problem is None else f"{root / entry['file']} ({entry['key']}): {problem}"

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [p for p in pool.map(check, entries) if p is not None]

