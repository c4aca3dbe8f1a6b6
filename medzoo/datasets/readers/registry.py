"""The `Volume` every reader returns, the reader registry (`READERS`, `register_reader`), and `read_volume`, the
one front door.

Layout after any reader: channel-first, `(C, D, H, W)` for volumes and `(C, H, W)` for 2D images, where
D is the slice axis (DICOM slice order, TIFF page order, NIfTI canonical z), H the rows and W the columns.

One table holds every format: NIfTI, DICOM, TIFF, NumPy (`.npy`, `.npz`), 2D images (`image`: JPEG, PNG, BMP,
GIF) and MedMNIST. A reader's `kind` says what it returns: `sample` readers give one `Volume` per file;
`dataset` readers (`medmnist`) give a whole dataset's split arrays, for a data source (`data=medmnist`), and
`read_volume` refuses them. `reader_for(path)` picks a reader by suffix and content:

1. a folder is a DICOM series;
2. otherwise the longest suffix any reader claims decides (`.nii.gz` before `.gz`); where several readers claim
   it, the first whose content check (`ReaderSpec.sniff`) accepts the file wins, else the one with no check:
   an `.npz` holding MedMNIST's members (`train_images`, `train_labels`, ... `test_labels`) is `medmnist`, any
   other `.npz` is `npz`;
3. a file with no suffix, or one no reader claims, goes to the first reader whose content check accepts it: 128
   bytes then `DICM` (the DICOM preamble) is `dicom`, a zip with MedMNIST's members is `medmnist`;
4. anything else is a DataError listing the formats.

Content checks read a file's first bytes or a zip's directory only, and regular files only (never a pipe).
`.tif`/`.tiff` go to `tiff` by suffix; image folders decode them with the `image` reader instead (one Pillow page,
uint8), as they always have: see `readers/image.py`.
"""

from __future__ import annotations

import importlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.close_names import unknown_name
from medzoo.errors import ConfigError, DataError
from medzoo.limits import env_bytes

# Finite checks scan float data in slabs of about this many bytes, so a large memory-mapped stack is never
# copied whole into a boolean mask.
FINITE_CHUNK_BYTES = 16 * 2**20
# A file whose header claims an array larger than `max_array_bytes()` is refused before anything is allocated: a
# corrupt header or a decompression bomb, not a scan (a 1000 x 512 x 512 float32 stack is 1 GiB). The cap follows
# the memory this machine has free, so that the array and the one copy a reader may make both fit:
# MEMORY_FRACTION of MemAvailable (/proc/meminfo; free pages from sysconf elsewhere). MAX_ARRAY_ENV (bytes), or
# MAX_ARRAY_BYTES set in code, replaces it.
MAX_ARRAY_BYTES: int | None = None
MAX_ARRAY_ENV = "MEDZOO_MAX_ARRAY_BYTES"
MEMORY_FRACTION = 0.5
# Where no free-memory figure can be read at all.
FALLBACK_ARRAY_BYTES = 16 * 2**30
MEMINFO = "/proc/meminfo"


@dataclass
class Volume:
    """A channel-first array and what is known about it: `spacing`, `orientation`, `source`, `dtype`, `shape`."""

    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """2 for `(C, H, W)`, 3 for `(C, D, H, W)`."""
        return self.array.ndim - 1


def make_volume(array: np.ndarray, source: str | Path, spacing: Sequence[float | None] | None,
                orientation: str | None = None, **extra: Any) -> Volume:
    """Build a `Volume` with the common meta keys; an unknown spacing (None, or a None entry) becomes 1.0."""
    if array.ndim not in (3, 4):
        raise DataError(f"{source}: reader produced shape {array.shape}; expected (C, H, W) or (C, D, H, W).")
    if array.dtype.kind not in "biuf":  # complex or structured voxels: no transform or model takes them
        raise DataError(f"{source}: voxels of type {array.dtype} are not image intensities (real numbers); convert "
                        "the file to an integer or float type (e.g. the magnitude of complex data).")
    if array.size == 0:
        raise DataError(f"{source}: the image is empty (shape {array.shape}, a zero-length axis); the file is "
                        "corrupt or was written without data. Re-export it.")
    spatial = array.ndim - 1
    spacing = (None,) * spatial if spacing is None else tuple(spacing)
    known = all(s is not None for s in spacing)
    spacing = tuple(1.0 if s is None else float(s) for s in spacing)
    if len(spacing) != spatial:
        raise DataError(f"{source}: spacing {spacing} has {len(spacing)} values for {spatial} spatial axes.")
    meta = {"spacing": spacing, "spacing_known": known, "orientation": orientation, "source": str(source),
            "dtype": str(array.dtype), "shape": tuple(array.shape)}
    meta.update(extra)
    return Volume(array, meta)


def available_memory_bytes() -> int | None:
    """Memory available to new allocations: MemAvailable from /proc/meminfo, else free pages from sysconf."""
    try:
        with open(MEMINFO, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the figure is in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def max_array_bytes() -> tuple[int, str]:
    """The most bytes one array read from a file may claim, and the setting that decides it (for messages)."""
    if MAX_ARRAY_BYTES is not None:
        return MAX_ARRAY_BYTES, "readers.base.MAX_ARRAY_BYTES"
    value = env_bytes(MAX_ARRAY_ENV, FALLBACK_ARRAY_BYTES, " to follow the free memory")
    if value is not None:
        return value, MAX_ARRAY_ENV
    available = available_memory_bytes()
    if available is None:
        return FALLBACK_ARRAY_BYTES, f"the fixed fallback (no free-memory figure); set {MAX_ARRAY_ENV}"
    return int(available * MEMORY_FRACTION), (f"{MEMORY_FRACTION:g} of the {available / 2**30:,.1f} GiB of memory "
                                              f"available now; set {MAX_ARRAY_ENV} to change it")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**30 else f"{nbytes:,} bytes"


def check_array_bytes(nbytes: int, source: str | Path, described: str) -> None:
    """Raise DataError naming `source` when a header claims more than `max_array_bytes()` of data."""
    limit, setting = max_array_bytes()
    if nbytes > limit:
        raise DataError(f"{source}: the header claims {described}, {_size(nbytes)} of data, more than the "
                        f"{_size(limit)} limit ({setting}); refusing to allocate it (a corrupt header or a "
                        "decompression bomb). If the file is real, free some memory or raise the limit.")


def check_finite(array: np.ndarray, source: str | Path, allow_nonfinite: bool = False) -> None:
    """Raise DataError naming `source` if a float `array` holds NaN or Inf (integer data cannot, and is not read)."""
    if allow_nonfinite or array.dtype.kind not in "fc" or array.size == 0:
        return
    rows = array.reshape(1, -1) if array.ndim == 0 else array
    per_row = max(1, int(np.prod(rows.shape[1:], dtype=np.int64)) * rows.dtype.itemsize)
    step = max(1, FINITE_CHUNK_BYTES // per_row)
    bad, first = 0, None
    for start in range(0, rows.shape[0], step):
        mask = ~np.isfinite(rows[start:start + step])
        count = int(mask.sum())
        if count and first is None:
            index = np.argwhere(mask)[0]
            index[0] += start
            first = tuple(int(i) for i in index)
        bad += count
    if bad:
        raise DataError(f"{source}: {bad} non-finite value(s) (NaN or Inf), the first at index {first} of an "
                        f"array of shape {array.shape}. Fix or mask the file, or pass allow_nonfinite=True.")


READER_KINDS = ("sample", "dataset")


@dataclass(frozen=True)
class ReaderSpec:
    """One registered reader: its name, where its function lives (imported on first use), what it reads.

    `kind`: `sample` (the function returns one `Volume`) or `dataset` (a whole dataset's split arrays; not for
    `read_volume`). `sniff`: an optional `module:function(path) -> bool` that recognises the format by content, for
    a suffix shared with another reader or a file no suffix names.
    """

    name: str
    target: str
    suffixes: tuple[str, ...]
    description: str
    kind: str = "sample"
    sniff: str = ""

    def load(self) -> Callable[..., Any]:
        """Import and return the reader function (`module:function`)."""
        return _resolve(self.target)

    def accepts(self, path: Path) -> bool:
        """True when this reader's content check recognises the regular file `path` (False without a check)."""
        if not self.sniff:
            return False
        try:
            if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the read
                return False
        except OSError:
            return False
        return bool(_resolve(self.sniff)(path))


def _resolve(target: str) -> Callable[..., Any]:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


# A file with one of these suffixes is DICOM; a folder holding one is a DICOM series.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
DICOM_PREAMBLE = 128  # bytes before the `DICM` marker of a DICOM file


def has_dicom_preamble(path: str | Path) -> bool:
    """True when bytes 128..131 of `path` are `DICM`, the marker of a DICOM file (whatever its name)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(DICOM_PREAMBLE + 4)
    except OSError:
        return False
    return head[DICOM_PREAMBLE:] == b"DICM"


# The one explicit list of readers. Targets are imported lazily so that reading a .npy file never pays for
# importing pydicom or tifffile. Where two readers share a suffix (`.npz`), the one listed with a content check
# is asked first (`reader_for`).
_PACKAGE = "medzoo.datasets.readers"
READERS: dict[str, ReaderSpec] = {spec.name: spec for spec in (
    ReaderSpec("nifti", f"{_PACKAGE}.nifti:read_nifti", (".nii", ".nii.gz"), "NIfTI-1/2 volume, reoriented to RAS+"),
    ReaderSpec("dicom", f"{_PACKAGE}.dicom:read_dicom_series", DICOM_SUFFIXES,
               "a folder holding one DICOM series (or one .dcm file)", sniff=f"{__name__}:has_dicom_preamble"),
    ReaderSpec("tiff", f"{_PACKAGE}.tiff:read_tiff", (".tif", ".tiff"), "TIFF image or multipage stack"),
    ReaderSpec("npy", f"{_PACKAGE}.numpy_io:read_npy", (".npy",), "NumPy array, memory-mapped"),
    ReaderSpec("npz", f"{_PACKAGE}.numpy_io:read_npz", (".npz",), "one array of a NumPy .npz archive"),
    ReaderSpec("image", f"{_PACKAGE}.image:read_image", (".jpg", ".jpeg", ".png", ".bmp", ".gif"),
               "2D image decoded by Pillow to uint8 (C, H, W)"),
    ReaderSpec("medmnist", f"{_PACKAGE}.medmnist_file:read_medmnist", (".npz",),
               "a whole MedMNIST dataset (train/val/test images and labels)", kind="dataset",
               sniff=f"{_PACKAGE}.medmnist_file:is_medmnist"),
)}


def volume_suffixes() -> tuple[str, ...]:
    """Every file suffix a `sample` reader claims (lower case), each once: the files `read_volume` reads."""
    return tuple(dict.fromkeys(suffix for spec in READERS.values() if spec.kind == "sample"
                               for suffix in spec.suffixes))


def is_dicom_series(path: str | Path) -> bool:
    """A folder that holds at least one DICOM file (by suffix)."""
    path = Path(path)
    return path.is_dir() and any(p.suffix.lower() in DICOM_SUFFIXES for p in path.iterdir() if p.is_file())


def register_reader(name: str, function: Callable[..., Volume], suffixes: Sequence[str],
                    description: str = "") -> ReaderSpec:
    """Add a reader of your own to `READERS`; returns its spec.

    From then on `read_volume`, `medzoo prepare` (data.reader=auto or NAME) and a card's `input.reader` pick it for
    files ending in one of `suffixes`, like the readers above. A card or a cache names a reader by `name` only:
    the function is found here, never imported from what a file says.

    Args:
        function: `function(path, **options) -> Volume` (see `make_volume`), defined at the top level of a module,
            since a reader is found again by `module:function` as the built-in ones are.
        suffixes: file endings, lower case with their dot (".mha", ".nii.gz"); none may belong to another reader.
    """
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or name == "auto":
        raise ConfigError(f"reader name {name!r}: use letters, digits, '_' and '-' (and not 'auto').")
    target = f"{function.__module__}:{function.__qualname__}"
    spec = ReaderSpec(name, target, tuple(suffixes), description or (function.__doc__ or "").strip().split("\n")[0])
    if name in READERS and READERS[name] != spec:
        raise ConfigError(f"reader '{name}' is already registered ({READERS[name].target}); choose another name.")
    for suffix in spec.suffixes:
        if not (isinstance(suffix, str) and suffix.startswith(".") and len(suffix) > 1 and suffix == suffix.lower()):
            raise ConfigError(f"reader '{name}': suffix {suffix!r} must be lower case and start with a dot, e.g. "
                              "'.mha'.")
        taken = [other.name for other in READERS.values() if other.name != name and suffix in other.suffixes]
        if taken:
            raise ConfigError(f"reader '{name}': suffix '{suffix}' already belongs to reader '{taken[0]}'; pass "
                              f"reader={taken[0]} or reader={name} to choose per run instead.")
    try:
        found = spec.load()
    except (ImportError, AttributeError):
        found = None
    if found is not function:
        raise ConfigError(f"reader '{name}': {target} cannot be found again by its module and name; define the "
                          "reader function at the top level of an importable module.")
    READERS[name] = spec
    return spec


def supported_formats() -> str:
    """One line per reader: name, suffixes, description (for error messages and `--help`)."""
    return "; ".join(f"{s.name} ({', '.join(s.suffixes)}: {s.description})" for s in READERS.values())


def reader_for(path: str | Path) -> ReaderSpec:
    """The reader for `path` by suffix and content (see the module docstring), or DICOM for a directory; DataError
    listing the formats otherwise."""
    path = Path(path)
    if path.is_dir():
        return READERS["dicom"]
    name = path.name.lower()
    # Longest suffix first, so `.nii.gz` wins over any reader that might claim `.gz`.
    claimed = sorted({suffix for spec in READERS.values() for suffix in spec.suffixes}, key=lambda s: (-len(s), s))
    suffix = next((suffix for suffix in claimed if name.endswith(suffix)), None)
    if suffix is not None:
        candidates = [spec for spec in READERS.values() if suffix in spec.suffixes]
        if len(candidates) == 1:
            return candidates[0]
        by_content = next((spec for spec in candidates if spec.accepts(path)), None)
        return by_content or next((spec for spec in candidates if not spec.sniff), candidates[0])
    by_content = next((spec for spec in READERS.values() if spec.accepts(path)), None)
    if by_content is not None:
        return by_content
    raise DataError(f"{path}: no reader for this file type. Supported: {supported_formats()}. "
                    "Convert the file, or pass reader=NAME to force one.")


def _file_kind(path: Path) -> str:
    mode = path.stat().st_mode
    kinds = {stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device"}
    return next((kind for check, kind in kinds.items() if check(mode)), "not a file")


def read_volume(path: str | Path, reader: str = "auto", **kwargs: Any) -> Volume:
    """Read `path` with the named reader, or by suffix and content (a directory is a DICOM series) when
    `reader="auto"`; a `dataset` reader's file (MedMNIST) is refused, since it holds a dataset, not one sample."""
    if reader != "auto" and reader not in READERS:
        raise unknown_name("reader", reader, READERS)
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"not found: {path}. Check the path (data.root or MEDZOO_DATA).")
    if not (path.is_file() or path.is_dir()):  # a pipe or a device would block the reader, or never end
        raise DataError(f"{path}: not a regular file or a folder ({_file_kind(path)}); medzoo reads images from "
                        "files. Copy the data into a file.")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes), cut off by a failed copy or download. Restore or delete it.")
    spec = reader_for(path) if reader == "auto" else READERS[reader]
    if spec.kind != "sample":
        raise DataError(f"{path}: a {spec.name} file holds a whole dataset (train/val/test arrays), not one image "
                        f"or volume; train on it with data={spec.name} data.path={path}.")
    return spec.load()(path, **kwargs)
