"""Decode-once cache: decoded, preprocessed, fixed-size uint8 samples, kept in memory or on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medzoo.datasets.arrays import DecodeReport, SplitArrays
from medzoo.datasets.folder_scan import FileRecord
from medzoo.datasets.images import decode_image, to_channels
from medzoo.errors import DataError
from medzoo.progress import progress
from medzoo.transforms.layout import to_channel_first

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
# A cache manifest holds a key and a label per sample (about 100 bytes): this allows millions of samples.
MANIFEST_MAX_BYTES = 256 * 2**20


def cache_key(records: Sequence[FileRecord], channels: int, preprocess_spec: str) -> str:
    """Fingerprint of the file list (path, size, mtime) and the preprocessing; a change rebuilds the cache."""
    digest = hashlib.sha256(f"v{CACHE_FORMAT}|{channels}|{preprocess_spec}".encode())
    for record in records:
        try:
            stat = record.path.stat()
            seen = f"{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:  # a listed file that is missing: decoding names it (or skips it, data.on_error=skip)
            seen = "unreadable"
        digest.update(f"{record.key}|{record.label}|{seen}\n".encode())
    return digest.hexdigest()[:20]


def decode_split(records: Sequence[FileRecord], channels: int, preprocess: Callable[[np.ndarray], np.ndarray],
                 on_error: str = "raise", workers: int = 2, desc: str = "decode") -> SplitArrays:
    """Decode and preprocess every record (threads: PIL and OpenCV release the GIL); `preprocess` takes and
    returns channel-first arrays."""
    report = DecodeReport()

    def work(record: FileRecord):
        try:
            decoded = decode_image(record.path)
        except DataError as exc:
            if on_error != "skip":
                raise
            return record, None, str(exc)
        pixels = to_channel_first(to_channels(decoded.pixels, channels))
        return record, (preprocess(pixels), decoded), None

    images, labels, keys = [], [], []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for record, result, error in progress(pool.map(work, records), len(records), f"decode {desc}", "images"):
            if result is None:
                report.skipped.append((record.key, error))
                continue
            pixels, decoded = result
            report.stored_gray_rgb += decoded.stored_gray
            report.colour_converted += channels == 1 and decoded.pixels.shape[-1] == 3
            images.append(pixels)
            labels.append(record.label)
            keys.append(record.key)
    if report.skipped:
        log.warning("skipped %d unreadable file(s) (data.on_error=skip): %s", len(report.skipped),
                    ", ".join(k for k, _ in report.skipped[:10]))
    if not images:
        raise DataError(f"no readable images among {len(records)} files ({desc}).")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"preprocessing gives images of different shapes {sorted(shapes)[:3]}: "
                        "the transforms' `pre` steps must end with a fixed-size resize.")
    return SplitArrays(np.stack(images), np.asarray(labels, dtype=np.int64), keys, report)


def load_or_build(cache_dir: Path | None, name: str, records: Sequence[FileRecord], channels: int,
                  preprocess: Callable[[np.ndarray], np.ndarray], preprocess_spec: str,
                  on_error: str = "raise", workers: int = 2) -> SplitArrays:
    """Return the cached split for `records`, decoding only when no valid cache file exists."""
    if cache_dir is None:
        return decode_split(records, channels, preprocess, on_error, workers, desc=name)
    key = cache_key(records, channels, preprocess_spec + f"|on_error={on_error}")
    array_path, meta_path = cache_dir / f"{name}-{key}.npy", cache_dir / f"{name}-{key}.json"
    if meta_path.exists() and array_path.exists():
        try:
            return read_cached_split(array_path, meta_path)
        except DataError as exc:  # a cache is rebuilt, never trusted
            log.warning("%s; decoding again", exc)
    split = decode_split(records, channels, preprocess, on_error, workers, desc=name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _atomic_save(array_path, split.images)
    meta = {"format": CACHE_FORMAT, "shape": list(split.images.shape), "keys": split.keys,
            "labels": split.labels.tolist(), "skipped": split.report.skipped,
            "stored_gray_rgb": split.report.stored_gray_rgb, "colour_converted": split.report.colour_converted}
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, meta_path)  # the manifest lands last: its presence means the array is complete
    return split


def read_cached_split(array_path: Path, meta_path: Path) -> SplitArrays:
    """The split a disk cache holds, checked against its manifest: its size bounded before it is read, the array
    memory-mapped (numpy checks the header against the file; no pickle), and the manifest's shape, labels, keys
    and counts checked against the array. Anything amiss is a DataError naming the file."""
    try:
        if meta_path.stat().st_size > MANIFEST_MAX_BYTES:
            raise ValueError(f"{meta_path.stat().st_size:,} bytes, over the {MANIFEST_MAX_BYTES:,} a manifest may hold")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        images = np.load(array_path, mmap_mode="r", allow_pickle=False)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(f"cache {array_path} is unreadable ({type(exc).__name__}: {exc})") from exc
    count = images.shape[0] if images.ndim else -1
    fields = {"shape": list, "keys": list, "labels": list, "skipped": list, "stored_gray_rgb": int,
              "colour_converted": int}
    if not (isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT
            and all(type(meta.get(name)) is kind for name, kind in fields.items())):
        problem = "its manifest is not one this version writes"
    elif meta["shape"] != list(images.shape) or images.dtype.kind not in "biuf":
        problem = f"the array ({images.dtype}, shape {list(images.shape)}) is not the one its manifest describes"
    elif not (len(meta["keys"]) == len(meta["labels"]) == count and all(isinstance(k, str) for k in meta["keys"])
              and all(type(label) is int and label >= 0 for label in meta["labels"])):
        problem = f"its manifest does not give a key and a class index for each of the {count} samples"
    elif not all(isinstance(s, list) and len(s) == 2 and all(isinstance(v, str) for v in s) for s in meta["skipped"]):
        problem = "its manifest's skipped files are not (key, reason) pairs"
    else:
        log.info("cache hit: %s (%d samples, no decoding)", array_path, count)
        report = DecodeReport(skipped=[tuple(s) for s in meta["skipped"]], stored_gray_rgb=meta["stored_gray_rgb"],
                              colour_converted=meta["colour_converted"])
        return SplitArrays(np.ascontiguousarray(images), np.asarray(meta["labels"], dtype=np.int64), meta["keys"],
                           report)
    raise DataError(f"cache {array_path}: {problem}")


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)
