"""Prepared cache: every source decoded once into a memory-mappable `.npy` per sample, plus `manifest.json`.

`prepare(sources, out_dir)` reads each `(path, label)` with `read_volume` (files or DICOM folders), brings
it to one canonical channel-first layout and writes `out_dir/samples/<key>-<hash>.npy` atomically (a temp
file, then `os.replace`). `manifest.json` is rewritten as the run goes (at most every CHECKPOINT_SECONDS,
and whenever the run stops, by error or Ctrl-C), so a rerun skips every sample that has both a manifest
entry and an intact file, and re-reads only the missing, damaged or changed ones.

One file per sample, not one big array per shape: a sample is the unit that is written atomically,
resumed, verified and repaired; shapes may differ between samples; and a 262 MB slice stack is large
enough that opening one file per read costs nothing measurable (bench/loader.py).

Checksum: CRC-32 of the whole `.npy` file (header and data). It guards against accidents (a torn write,
truncation, flipped bits), not tampering, and runs at about 4 GB/s on one core where sha256 runs at 0.4-1.7
GB/s depending on the CPU, which matters because `verify="full"` reads the whole cache. The sources get a
sha256 (provenance: which bytes the cache was made from).

`PreparedDataset(out_dir)` checks the cache against its manifest and serves `(tensor, label)` from
`np.load(mmap_mode="r")`: no decoding while training.

A cache is untrusted input (`read_manifest`): the manifest is size-bounded before it is parsed, and every entry
must have its keys with the right types, a file that resolves inside `samples/` (symbolic links followed), a
label within the class list, a shape whose bytes stay under the readers' cap, and a dtype from `DTYPES`.
Anything else is one DataError line naming the cache, the entry and the fix (prepare again).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from medzoo.datasets.base import build_into
from medzoo.datasets.readers.base import READERS, check_array_bytes, read_volume, reader_for
from medzoo.download import sha256_file
from medzoo.errors import ConfigError, DataError
from medzoo.transforms.layout import DEPTH_MODES, depth_to_channels

log = logging.getLogger(__name__)

FORMAT = "medzoo-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SAMPLES = "samples"
LAYOUTS = ("auto", "image", "volume", "slices")
ON_ERROR = ("raise", "skip")
VERIFY = ("size", "full")
# Rewriting the whole manifest after every sample is quadratic in the sample count; a crash loses at most
# this much finished work (the samples written since the last rewrite are redone).
CHECKPOINT_SECONDS = 2.0
# Files are checksummed in blocks of this size: large enough for full speed, small enough to stay in cache.
BLOCK = 16 * 2**20
# Errors list at most this many files; the rest are counted.
LISTED = 10
# A manifest larger than this is refused before it is parsed (about 700 bytes per sample: some 700 000 samples).
MAX_MANIFEST_BYTES = 512 * 2**20
# The only sample dtypes a cache may claim (no object, structured or byte-string dtypes).
DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16",
          "float32", "float64")
# Keys every manifest entry needs to be read, with their JSON types.
ENTRY_KEYS = {"key": str, "label": int, "file": str, "shape": list, "dtype": str, "bytes": int, "crc32": str}
JSON_KINDS = {str: "a string", int: "an integer", list: "an array", dict: "an object"}
# A `.npy` header as `write_npy` writes it (format 1.0) is at most this long.
MAX_NPY_HEADER = 2**16 + 16
# Longest quote of a manifest value in an error message.
QUOTE = 120

Source = tuple[str | Path, str | int]


# ----------------------------------------------------------------------------- listing sources

def _is_candidate(path: Path) -> bool:
    """A file with a reader's suffix, or a folder (a DICOM series); hidden entries never are."""
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return True
    try:
        reader_for(path)
    except DataError:
        return False
    return True


def sources_from_folder(inputs: str | Path) -> tuple[list[Source], list[str]]:
    """`(path, class name)` for every `inputs/<class>/<file or DICOM folder>`, and the entries ignored."""
    root = Path(inputs).expanduser()
    if not root.is_dir():
        raise DataError(f"inputs folder not found: {root}. Set inputs=DIR holding <class>/<file or DICOM "
                        "folder>.")
    sources: list[Source] = []
    ignored: list[str] = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith("."):
            continue
        if not folder.is_dir():
            ignored.append(folder.name)
            continue
        for entry in sorted(folder.iterdir()):
            if _is_candidate(entry):
                sources.append((entry, folder.name))
            elif not entry.name.startswith("."):
                ignored.append(f"{folder.name}/{entry.name}")
    if ignored:
        listing = ", ".join(ignored[:LISTED]) + (", ..." if len(ignored) > LISTED else "")
        log.warning("%s: ignored %d entr(ies) that are neither a class folder's image file nor a DICOM "
                    "folder: %s", root, len(ignored), listing)
    if not sources:
        raise DataError(f"{root}: no sources found. Expected <class>/<file or DICOM folder>, with files of "
                        f"these types: {', '.join(s for spec in READERS.values() for s in spec.suffixes)}.")
    return sources, ignored


def sources_from_csv(labels: str | Path) -> list[Source]:
    """`(path, label)` rows of a CSV with columns `path,label`; relative paths start at the CSV's folder."""
    table = Path(labels).expanduser()
    if not table.is_file():
        raise DataError(f"labels CSV not found: {table}. Set labels=FILE.csv with columns path,label.")
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise DataError(f"{table}: needs a header with columns path,label; found "
                            f"{columns or 'no header'}.")
        reader.fieldnames = columns
        sources: list[Source] = []
        for line, row in enumerate(reader, start=2):
            path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not path or not label:
                raise DataError(f"{table}, line {line}: empty path or label ({row}).")
            resolved = Path(path).expanduser()
            sources.append((resolved if resolved.is_absolute() else table.parent / resolved, label))
    if not sources:
        raise DataError(f"{table}: no rows after the header.")
    return sources


# ----------------------------------------------------------------------------- layout and files

def canonical_layout(array: np.ndarray, layout: str, source: str | Path, channels: int | None = None,
                     depth_mode: str = "resample") -> np.ndarray:
    """Bring a reader's `(C, H, W)` or `(C, D, H, W)` array to `layout` (see `prepare`); a view if it can."""
    shape = tuple(array.shape)
    if layout == "auto":
        return array
    if layout == "image":
        if array.ndim == 4 and shape[1] == 1:
            return array[:, 0]
        if array.ndim != 3:
            raise DataError(f"{source}: layout=image needs a 2D image (C, H, W) but the reader gave {shape}. "
                            "Use layout=slices (depth becomes channels) or layout=volume.")
        return array
    if layout == "volume":
        if array.ndim != 4:
            raise DataError(f"{source}: layout=volume needs (C, D, H, W) but the reader gave {shape}. For "
                            "a TIFF stack pass data.reader_kwargs.as_volume=true; for 2D data, layout=image.")
        return array
    stack = array if array.ndim == 4 else array[None]  # a (C, H, W) stack is already one slice per channel
    try:
        return depth_to_channels(stack, channels, depth_mode)
    except ValueError as exc:
        raise DataError(f"{source}: cannot make a slice stack of {channels} channels from shape {shape}: "
                        f"{exc}.") from exc


def _file_name(key: str) -> str:
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


def _meta_value(value: Any) -> Any:
    """A JSON-safe copy of a reader meta value (tuples and numpy scalars become lists and numbers)."""
    if isinstance(value, (list, tuple)):
        return [_meta_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------- manifest

def _read_manifest(path: Path) -> dict | None:
    """The manifest of an earlier run, or None (with a warning) when there is none usable to continue from."""
    if not path.exists():
        return None
    try:
        return read_manifest(path.parent)
    except DataError as exc:
        log.warning("%s: starting the cache over (%s)", path, exc)
        return None


def _quote(value: Any) -> str:
    """A manifest value on one line, shortened: what an error may show of an untrusted file."""
    text = repr(value)
    return text if len(text) <= QUOTE else text[:QUOTE - 3] + "..."


def _parse_manifest(root: Path) -> dict:
    """`root/manifest.json` as a dict, its size bounded before it is read."""
    path = root / MANIFEST
    fix = f"Run `medzoo prepare inputs=DIR out={root}` again."
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise DataError(f"{path}: {size / 2**20:,.0f} MiB, more than the {MAX_MANIFEST_BYTES / 2**20:.0f} MiB a "
                            f"manifest may have; refusing to parse it (damaged, or not written by medzoo). {fix}")
        with open(path, "rb") as handle:  # read no more than the limit, whatever the size said
            text = handle.read(MAX_MANIFEST_BYTES + 1)
        if len(text) > MAX_MANIFEST_BYTES:
            raise DataError(f"{path}: grew past {MAX_MANIFEST_BYTES / 2**20:.0f} MiB while read. {fix}")
        manifest = json.loads(text)
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise DataError(f"{path}: unreadable manifest ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:QUOTE]}). {fix}") from exc
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: the manifest is a JSON {type(manifest).__name__}, not an object. {fix}")
    return manifest


def read_manifest(root: Path) -> dict:
    """The manifest of the cache at `root`, every field the readers use checked (see the module docstring)."""
    manifest = _parse_manifest(root)
    path = root / MANIFEST
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        found = f"{_quote(manifest.get('format'))} v{_quote(manifest.get('format_version'))}"
        raise DataError(f"{path}: format {found}; this medzoo reads {FORMAT} v{FORMAT_VERSION}. "
                        f"Prepare it again with {rerun_hint(manifest, root)}.")
    hint = rerun_hint(manifest, root)
    for field, kind in (("classes", list), ("samples", list), ("skipped", list), ("settings", dict),
                        ("origin", dict)):
        value = manifest.get(field)
        if not isinstance(value, kind) and (field == "classes" or field == "samples" or value is not None):
            raise DataError(f"{path}: '{field}' is {_quote(value)}, expected {JSON_KINDS[kind]}. Run {hint} again.")
    classes = manifest["classes"]
    if not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{path}: 'classes' must be a non-empty list of names, not {_quote(classes)}. Run {hint} "
                        "again.")
    samples = (root / SAMPLES).resolve()
    for index, entry in enumerate(manifest["samples"]):
        _check_entry(path, samples, index, entry, len(classes), hint)
    return manifest


def _check_entry(path: Path, samples: Path, index: int, entry: Any, num_classes: int, hint: str) -> None:
    """Raise DataError naming entry `index` unless it is one `prepare` could have written."""
    where = f"{path}: samples[{index}]"
    if not isinstance(entry, dict):
        raise DataError(f"{where} is {_quote(entry)}, not an object. Run {hint} again.")
    where += f" (key {_quote(entry.get('key'))})"

    def bad(key: str, problem: str) -> DataError:
        return DataError(f"{where}: '{key}' {problem}. Run {hint} again: it rewrites the manifest.")

    for key, kind in ENTRY_KEYS.items():
        if key not in entry:
            raise bad(key, "is missing")
        if not isinstance(entry[key], kind) or isinstance(entry[key], bool):
            raise bad(key, f"is {_quote(entry[key])}, expected {JSON_KINDS[kind]}")
    if "source_sha256" in entry and not isinstance(entry["source_sha256"], str | None):
        raise bad("source_sha256", f"is {_quote(entry['source_sha256'])}, expected a string")
    if not 0 <= entry["label"] < num_classes:
        raise bad("label", f"is {entry['label']}, out of range for the {num_classes} classes")
    file = entry["file"]
    parts = Path(file).parts
    if Path(file).is_absolute():
        raise bad("file", f"is {_quote(file)}, an absolute path; entries name files inside {SAMPLES}/")
    if "\\" in file or ":" in file:  # `prepare` writes `samples/<letters, digits, ._->.npy`
        raise bad("file", f"is {_quote(file)}, not a plain relative path; entries name files inside {SAMPLES}/")
    if ".." in parts:
        raise bad("file", f"is {_quote(file)}, which climbs out with '..'; entries name files inside {SAMPLES}/")
    try:
        resolved = (path.parent / file).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a null byte, a symbolic-link loop
        raise bad("file", f"is {_quote(file)}, which does not resolve ({exc})") from exc
    if not resolved.is_relative_to(samples) or resolved == samples:
        raise bad("file", f"is {_quote(file)}, which resolves to {_quote(str(resolved))}, outside the cache's "
                          f"{SAMPLES}/ folder (symbolic links followed)")
    shape, dtype = entry["shape"], entry["dtype"]
    if dtype not in DTYPES:
        raise bad("dtype", f"is {_quote(dtype)}, not one of {', '.join(DTYPES)}")
    if len(shape) not in (3, 4) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise bad("shape", f"is {_quote(shape)}, expected 3 or 4 positive integers ((C, H, W) or (C, D, H, W))")
    data = math.prod(shape) * np.dtype(dtype).itemsize  # Python integers: no overflow, whatever is claimed
    try:
        check_array_bytes(data, where, f"'shape' {shape} of {dtype}")
    except DataError as exc:
        raise DataError(f"{exc} Otherwise run {hint} again.") from exc
    if not data <= entry["bytes"] <= data + MAX_NPY_HEADER:
        raise bad("bytes", f"is {entry['bytes']}, but a {dtype} array of shape {shape} is a .npy file of "
                           f"{data} bytes plus a header")


def _write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())  # the one small file whose loss would cost the whole run's work
    os.replace(tmp, path)


def _resolve(sources: Sequence[Source], root: str | Path | None,
             classes: Sequence[str] | None) -> tuple[list[tuple[Path, str, int, str]], list[str]]:
    """(absolute path, key, label index, class name) per source, and the class names."""
    if not sources:
        raise DataError("prepare: no sources given.")
    paths = [Path(p).expanduser().absolute() for p, _ in sources]
    base = Path(root).expanduser().absolute() if root is not None else Path(os.path.commonpath(
        [str(p.parent) for p in paths]))
    labels = [label for _, label in sources]
    if classes is None:
        if all(isinstance(v, (int, np.integer)) for v in labels):
            classes = [str(i) for i in range(int(max(labels)) + 1)]
        else:
            classes = sorted({str(v) for v in labels})
    classes = [str(c) for c in classes]
    out, seen = [], {}
    for path, label in zip(paths, labels):
        if isinstance(label, (int, np.integer)):
            if not 0 <= int(label) < len(classes):
                raise DataError(f"{path}: label {label} is out of range for the {len(classes)} classes "
                                f"{classes}.")
            index = int(label)
        elif str(label) in classes:
            index = classes.index(str(label))
        else:
            raise DataError(f"{path}: label '{label}' is not one of the classes {classes}.")
        try:
            key = path.relative_to(base).as_posix()
        except ValueError:
            key = path.as_posix().lstrip("/")
        if key in seen:
            raise DataError(f"{path}: listed twice (also as {seen[key]}); each source must appear once.")
        seen[key] = path
        out.append((path, key, index, classes[index]))
    return out, classes


def _check_options(layout: str, depth_mode: str, on_error: str, verify: str, reader: str,
                   dtype: str | None) -> None:
    for name, value, allowed in (("layout", layout, LAYOUTS), ("depth_mode", depth_mode, DEPTH_MODES),
                                 ("on_error", on_error, ON_ERROR), ("verify", verify, VERIFY),
                                 ("reader", reader, ("auto", *READERS))):
        if value not in allowed:
            where = "" if name == "verify" else f" (data.{name} in medzoo prepare)"
            raise ConfigError(f"{name}={value!r}{where} is not one of {', '.join(allowed)}.")
    if dtype is not None:
        try:
            np.dtype(dtype)
        except TypeError as exc:
            raise ConfigError(f"dtype={dtype!r} is not a NumPy dtype (e.g. float32, or null).") from exc


def _sample_ok(entry: dict, file: Path, verify: str) -> str | None:
    """None when `file` matches its manifest entry, else what is wrong with it."""
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        return "missing"
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


def prepare(sources: Sequence[Source], out_dir: str | Path, *, root: str | Path | None = None,
            classes: Sequence[str] | None = None, reader: str = "auto", reader_kwargs: dict | None = None,
            layout: str = "auto", channels: int | None = None, depth_mode: str = "resample",
            in_chans: int | None = None, dtype: str | None = None, on_error: str = "raise",
            verify: str = "full", origin: dict | None = None, progress: bool = True) -> dict:
    """Decode `sources` into a prepared cache in `out_dir` (resuming any earlier run); return the manifest.

    Args:
        sources: `(path, label)` pairs; a label is a class name or an index into `classes`.
        root: keys are source paths relative to it (default: the sources' common folder).
        classes: class names in label order (default: the sorted names, or "0".."N-1" for integer labels).
        reader, reader_kwargs: passed to `read_volume` for every source.
        layout: "auto" keeps the reader's layout, "image" (C, H, W), "volume" (C, D, H, W), "slices" a 2.5D
            stack (C * D, H, W) whose depth is first fitted to `channels` by `depth_mode` when given.
        in_chans: a sample with another channel count (after `layout`) is a DataError.
        dtype: cast to this dtype (same-kind casts only); None keeps what the reader returns.
        on_error: "skip" records unreadable or mismatching sources in the manifest instead of stopping.
        verify: how a rerun checks finished samples before keeping them: "size" or "full" (CRC-32 too).
        origin: how the cache was made (e.g. the command's inputs), quoted in errors that ask for a rerun.
    """
    _check_options(layout, depth_mode, on_error, verify, reader, dtype)
    started = time.perf_counter()
    resolved, classes = _resolve(sources, root, classes)
    out = Path(out_dir).expanduser()
    (out / SAMPLES).mkdir(parents=True, exist_ok=True)
    for stale in (out / SAMPLES).glob("*.tmp"):
        stale.unlink()  # a sample being written when an earlier run stopped
    settings = {"reader": reader, "reader_kwargs": dict(reader_kwargs or {}), "layout": layout,
                "channels": channels, "depth_mode": depth_mode, "in_chans": in_chans,
                "dtype": None if dtype is None else str(np.dtype(dtype))}
    settings = json.loads(json.dumps(settings))  # compared with the manifest's copy, where tuples are lists
    manifest_path = out / MANIFEST
    old = _read_manifest(manifest_path)
    if old is not None and old.get("settings") != settings:
        changed = {k: (old.get("settings", {}).get(k), v) for k, v in settings.items()
                   if old.get("settings", {}).get(k) != v}
        log.warning("%s: settings changed (%s): preparing every sample again", out,
                    ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        old = None
    # Entries of the last run that this run has not reached yet stay in every interim manifest, so an
    # interruption early in a rerun does not forget samples further down the list.
    entries: dict[str, dict] = {e["key"]: e for e in (old or {}).get("samples", [])}
    skipped: dict[str, dict] = {}
    done: set[str] = set()
    counts = {"read": 0, "kept": 0, "repaired": 0}  # repaired: read again because the file was bad
    last_write = time.monotonic()

    order = [key for _, key, _, _ in resolved]
    listed = set(order)

    def manifest(complete: bool) -> dict:
        samples = [entries[k] for k in order if k in entries and (complete is False or k in done)]
        if not complete:
            samples += [e for k, e in entries.items() if k not in listed]  # kept until the run completes
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": complete, "checksum": "crc32",
                "classes": classes, "settings": settings, "origin": origin or (old or {}).get("origin"),
                "pending": 0 if complete else len(resolved) - len(done) - len(skipped),
                "counts": {"samples": len(samples), "skipped": len(skipped),
                           "bytes": sum(e["bytes"] for e in samples)},
                "samples": samples, "skipped": [skipped[k] for k in order if k in skipped]}

    completed = False
    try:
        bar = tqdm(resolved, desc="prepare", unit="sample", disable=not progress or None, leave=False)
        for path, key, label, name in bar:
            entry = entries.get(key)
            file = out / SAMPLES / _file_name(key)
            signature = source_signature(path) if path.exists() else None
            # A source deleted after preparing (to save space) keeps its intact cached copy.
            if entry is not None and (signature is None or entry["source_signature"] == signature):
                problem = _sample_ok(entry, file, verify)
                if problem is None:
                    if signature is None:
                        log.warning("%s: source not found; keeping its prepared copy %s", path, file)
                    entry.update(label=label, file=f"{SAMPLES}/{file.name}", **{"class": name})
                    done.add(key)
                    counts["kept"] += 1
                    continue
                log.warning("%s: %s; reading %s again", file, problem, path)
                counts["repaired"] += 1
            try:
                entries[key] = _prepare_one(path, key, label, name, file, signature, settings)
            except DataError as exc:
                if on_error != "skip":
                    raise
                entries.pop(key, None)
                skipped[key] = {"key": key, "source": str(path), "label": label, "class": name,
                                "error": str(exc)}
                log.warning("skipped %s (data.on_error=skip): %s", key, exc)
            else:
                done.add(key)
                counts["read"] += 1
            if time.monotonic() - last_write >= CHECKPOINT_SECONDS:
                _write_manifest(manifest_path, manifest(complete=False))
                last_write = time.monotonic()
        completed = True
    finally:
        if not completed:
            _write_manifest(manifest_path, manifest(complete=False))
    final = manifest(complete=True)
    final["last_run"] = {**counts, "seconds": round(time.perf_counter() - started, 3)}
    _write_manifest(manifest_path, final)
    kept = {e["file"] for e in final["samples"]}
    orphans = [p for p in (out / SAMPLES).glob("*.npy") if f"{SAMPLES}/{p.name}" not in kept]
    for orphan in orphans:
        orphan.unlink()  # samples of sources that are no longer listed
    if orphans:
        log.info("%s: removed %d sample file(s) of sources no longer listed", out, len(orphans))
    if skipped:
        log.warning("%s: skipped %d unreadable source(s) (data.on_error=skip), listed in %s: %s", out,
                    len(skipped), manifest_path, ", ".join(list(skipped)[:LISTED]))
    return final


def _prepare_one(path: Path, key: str, label: int, name: str, file: Path, signature: str | None,
                 settings: dict) -> dict:
    """Read, lay out, check and write one sample; return its manifest entry."""
    volume = read_volume(path, settings["reader"], **settings["reader_kwargs"])
    layout = settings["layout"]
    array = canonical_layout(volume.array, layout, path, settings["channels"], settings["depth_mode"])
    expected = settings["in_chans"]
    if expected is not None and array.shape[0] != int(expected):
        raise DataError(f"{path}: {array.shape[0]} channels (shape {tuple(array.shape)} after "
                        f"layout={layout}), expected {expected}. Fit the depth with layout=slices "
                        f"channels={expected} depth_mode=resample|crop|pad, fix in_chans, or remove "
                        "the source (data.on_error=skip skips it).")
    if settings["dtype"] is not None:
        try:
            array = array.astype(settings["dtype"], casting="same_kind", copy=False)
        except TypeError as exc:
            raise DataError(f"{path}: cannot cast {array.dtype} to dtype={settings['dtype']} without losing "
                            f"values ({exc}). Choose a float dtype or dtype=null.") from exc
    size, crc = write_npy(file, array)
    meta = volume.meta
    return {"key": key, "label": label, "class": name, "file": f"{SAMPLES}/{file.name}",
            "shape": list(array.shape), "dtype": str(array.dtype.newbyteorder("=")), "bytes": size,
            "crc32": crc,
            "spacing": _meta_value(meta.get("spacing")), "spacing_known": meta.get("spacing_known"),
            "orientation": meta.get("orientation"), "source": str(path), "source_sha256": source_sha256(path),
            "source_signature": signature, "source_shape": list(volume.array.shape)}


# ----------------------------------------------------------------------------- reading

def rerun_hint(manifest: dict, root: Path) -> str:
    """The command that repairs `root`, from the manifest's origin when known (and printable)."""
    origin = manifest.get("origin")
    origin = origin if isinstance(origin, dict) else {}
    given = " ".join(f"{k}={v}" for k, v in origin.items()
                     if k in ("inputs", "labels") and isinstance(v, str) and v and v.isprintable())
    return f"`medzoo prepare {given or 'inputs=DIR'} out={root}`"


def check_samples(root: Path, manifest: dict, verify: str, workers: int | None = None) -> list[str]:
    """What is wrong with the cache files against their manifest entries, one line per bad file."""
    entries = manifest["samples"]
    workers = workers or min(8, os.cpu_count() or 1)

    # Threads: file reads and zlib.crc32 release the GIL, so files are checked in parallel.
    def check(entry: dict) -> str | None:
        problem = _sample_ok(entry, root / entry["file"], verify)
        return None if problem is None else f"{root / entry['file']} ({entry['key']}): {problem}"

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [p for p in pool.map(check, entries) if p is not None]


class PreparedDataset(Dataset):
    """A prepared cache as a torch Dataset of `(tensor, label)`, read from memory-mapped `.npy` files.

    Items are an index or the engine's `(index, seed)` pairs (see `SeededSampler`); `transform` gets the
    read-only memory map (it must not write into it) and is reseeded through `set_seed` when it has one.
    Without a transform the sample keeps its stored dtype unless `dtype` is given.
    """

    def __init__(self, root: str | Path, *, verify: str = "size",
                 transform: Callable[[np.ndarray], Any] | None = None, dtype: str | None = None):
        if verify not in VERIFY:
            raise ConfigError(f"verify={verify!r} is not one of {', '.join(VERIFY)}.")
        self.root = Path(root).expanduser()
        path = self.root / MANIFEST
        if not path.is_file():
            raise DataError(f"no prepared cache at {self.root} ({MANIFEST} not found). Make one with "
                            f"`medzoo prepare inputs=DIR out={self.root}`.")
        self.manifest = read_manifest(self.root)
        hint = rerun_hint(self.manifest, self.root)
        if self.manifest.get("complete") is not True:
            raise DataError(f"{self.root}: the prepare run did not finish ({_quote(self.manifest.get('pending'))} "
                            f"source(s) pending). Run {hint} again: it continues where it stopped.")
        problems = check_samples(self.root, self.manifest, verify)
        if problems:
            more = f"; and {len(problems) - LISTED} more" if len(problems) > LISTED else ""
            raise DataError(f"{self.root}: {len(problems)} prepared sample file(s) missing or damaged: "
                            f"{'; '.join(problems[:LISTED])}{more}. Run {hint} again: it re-reads only these "
                            "samples.")
        self.samples = self.manifest["samples"]
        self.classes: list[str] = list(self.manifest["classes"])
        self.labels = np.asarray([e["label"] for e in self.samples], dtype=np.int64)
        self.keys = [e["key"] for e in self.samples]
        self.transform, self.dtype = transform, None if dtype is None else np.dtype(dtype)
        skipped = self.manifest.get("skipped") or []
        if skipped:
            log.warning("%s: %d source(s) were skipped when the cache was prepared (listed in %s)", self.root,
                        len(skipped), path)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        """Channel count of the first sample (the cache does not force one; `in_chans=` does)."""
        return int(self.samples[0]["shape"][0]) if self.samples else 0

    @property
    def spatial_dims(self) -> int:
        return len(self.samples[0]["shape"]) - 1 if self.samples else 0

    def sample_bytes(self, index: int = 0) -> int:
        """Bytes of sample `index` as this dataset returns it without a transform."""
        entry = self.samples[index]
        itemsize = (self.dtype or np.dtype(entry["dtype"])).itemsize
        return int(np.prod(entry["shape"], dtype=np.int64)) * itemsize

    def array(self, index: int) -> np.ndarray:
        """Sample `index` as a read-only memory map (nothing is read until it is used)."""
        file = self.root / self.samples[index]["file"]
        try:
            return np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{file}: cannot open the prepared sample ({exc}). Run "
                            f"{rerun_hint(self.manifest, self.root)} again to repair it.") from exc

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, image = self._source(item)
        if self.transform is None:
            # np.array copies into numpy's own allocation (transparent huge pages: several times faster to
            # fault in than a fresh torch.empty of 100+ MB); torch.from_numpy then shares it.
            return torch.from_numpy(np.array(image, dtype=self.dtype)), int(self.labels[index])
        out = np.ascontiguousarray(self.transform(image), dtype=self.dtype)
        if not out.flags.writeable:  # a transform that handed back (a view of) the read-only memory map
            out = out.copy()
        return torch.from_numpy(out), int(self.labels[index])

    def getitem_into(self, item: int | tuple[int, int], out: torch.Tensor) -> tuple[torch.Tensor, int]:
        """`self[item]`, its image built in `out` (a batch slot) where it has that shape and dtype.

        The sample is made in place where it can be: copied straight from the memory map, or written by a
        transform that takes an `out` buffer (`multichannel.Compose`); see `build_into`.
        """
        index, image = self._source(item)
        built = build_into(image, self.transform, out.numpy(), self.dtype)
        return (out if built is None else torch.from_numpy(built)), int(self.labels[index])

    def _source(self, item: int | tuple[int, int]) -> tuple[int, np.ndarray]:
        """(index, memory-mapped image) of `item`, the transform reseeded for it when it carries a seed."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None and self.transform is not None and hasattr(self.transform, "set_seed"):
            self.transform.set_seed(seed)
        return index, self.array(index)
