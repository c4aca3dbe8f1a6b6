"""The prepared cache's `manifest.json`: read with its size bounded, every entry checked, written atomically."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.datasets.prepared_store.sample_files import (
    FORMAT,
    FORMAT_VERSION,
    SAMPLES,
    samples_folder,
)
from medzoo.datasets.readers.registry import check_array_bytes
from medzoo.errors import DataError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# A manifest larger than this is refused before it is parsed (about 700 bytes per sample: some 700 000 samples).
MAX_MANIFEST_BYTES = 512 * 2**20
# The only sample dtypes a cache may claim (no object, structured or byte-string dtypes).
DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16",
          "float32", "float64")
# Keys every manifest entry needs to be read, with their JSON types.
ENTRY_KEYS = {"key": str, "label": int, "file": str, "shape": list, "dtype": str, "bytes": int, "crc32": str}
# A `.npy` header as `write_npy` writes it (format 1.0) is at most this long.
MAX_NPY_HEADER = 2**16 + 16
# Longest quote of a manifest value in an error message.
QUOTE = 120
JSON_KINDS = {str: "a string", int: "an integer", list: "an array", dict: "an object"}


def read_earlier_manifest(path: Path) -> dict | None:
    """The manifest of an earlier run, or None (with a warning) when there is none usable to continue from."""
    if not path.exists():
        return None
    try:
        return read_manifest(path.parent)
    except DataError as exc:
        log.warning("%s: starting the cache over (%s)", path, exc)
        return None


def quote(value: Any) -> str:
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
        found = f"{quote(manifest.get('format'))} v{quote(manifest.get('format_version'))}"
        raise DataError(f"{path}: format {found}; this medzoo reads {FORMAT} v{FORMAT_VERSION}. "
                        f"Prepare it again with {rerun_hint(manifest, root)}.")
    hint = rerun_hint(manifest, root)
    for field, kind in (("classes", list), ("samples", list), ("skipped", list), ("settings", dict),
                        ("origin", dict)):
        value = manifest.get(field)
        if not isinstance(value, kind) and (field == "classes" or field == "samples" or value is not None):
            raise DataError(f"{path}: '{field}' is {quote(value)}, expected {JSON_KINDS[kind]}. Run {hint} again.")
    classes = manifest["classes"]
    if not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{path}: 'classes' must be a non-empty list of names, not {quote(classes)}. Run {hint} "
                        "again.")
    samples = samples_folder(root).resolve()
    for index, entry in enumerate(manifest["samples"]):
        _check_entry(path, samples, index, entry, len(classes), hint)
    return manifest


def _check_entry(path: Path, samples: Path, index: int, entry: Any, num_classes: int, hint: str) -> None:
    """Raise DataError naming entry `index` unless it is one `prepare` could have written."""
    where = f"{path}: samples[{index}]"
    if not isinstance(entry, dict):
        raise DataError(f"{where} is {quote(entry)}, not an object. Run {hint} again.")
    where += f" (key {quote(entry.get('key'))})"

    def bad(key: str, problem: str) -> DataError:
        return DataError(f"{where}: '{key}' {problem}. Run {hint} again: it rewrites the manifest.")

    for key, kind in ENTRY_KEYS.items():
        if key not in entry:
            raise bad(key, "is missing")
        if not isinstance(entry[key], kind) or isinstance(entry[key], bool):
            raise bad(key, f"is {quote(entry[key])}, expected {JSON_KINDS[kind]}")
    if "source_sha256" in entry and not isinstance(entry["source_sha256"], str | None):
        raise bad("source_sha256", f"is {quote(entry['source_sha256'])}, expected a string")
    if not 0 <= entry["label"] < num_classes:
        raise bad("label", f"is {entry['label']}, out of range for the {num_classes} classes")
    file = entry["file"]
    parts = Path(file).parts
    if Path(file).is_absolute():
        raise bad("file", f"is {quote(file)}, an absolute path; entries name files inside {SAMPLES}/")
    if "\\" in file or ":" in file:  # `prepare` writes `samples/<letters, digits, ._->.npy`
        raise bad("file", f"is {quote(file)}, not a plain relative path; entries name files inside {SAMPLES}/")
    if ".." in parts:
        raise bad("file", f"is {quote(file)}, which climbs out with '..'; entries name files inside {SAMPLES}/")
    try:
        resolved = (path.parent / file).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a null byte, a symbolic-link loop
        raise bad("file", f"is {quote(file)}, which does not resolve ({exc})") from exc
    if not resolved.is_relative_to(samples) or resolved == samples:
        raise bad("file", f"is {quote(file)}, which resolves to {quote(str(resolved))}, outside the cache's "
                          f"{SAMPLES}/ folder (symbolic links followed)")
    shape, dtype = entry["shape"], entry["dtype"]
    if dtype not in DTYPES:
        raise bad("dtype", f"is {quote(dtype)}, not one of {', '.join(DTYPES)}")
    if len(shape) not in (3, 4) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise bad("shape", f"is {quote(shape)}, expected 3 or 4 positive integers ((C, H, W) or (C, D, H, W))")
    data = math.prod(shape) * np.dtype(dtype).itemsize  # Python integers: no overflow, whatever is claimed
    try:
        check_array_bytes(data, where, f"'shape' {shape} of {dtype}")
    except DataError as exc:
        raise DataError(f"{exc} Otherwise run {hint} again.") from exc
    if not data <= entry["bytes"] <= data + MAX_NPY_HEADER:
        raise bad("bytes", f"is {entry['bytes']}, but a {dtype} array of shape {shape} is a .npy file of "
                           f"{data} bytes plus a header")


def write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())  # the one small file whose loss would cost the whole run's work
    os.replace(tmp, path)



def rerun_hint(manifest: dict, root: Path) -> str:
    """The command that repairs `root`, from the manifest's origin when known (and printable)."""
    origin = manifest.get("origin")
    origin = origin if isinstance(origin, dict) else {}
    given = " ".join(f"{k}={v}" for k, v in origin.items()
                     if k in ("inputs", "labels") and isinstance(v, str) and v and v.isprintable())
    return f"`medzoo prepare {given or 'inputs=DIR'} out={root}`"

