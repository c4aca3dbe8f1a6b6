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


def cache_key(records: Sequence[FileRecord], channels: int, preprocess_spec: str) -> str:
    """Fingerprint of the file list (path, size, mtime) and the preprocessing; a change rebuilds the cache."""
    digest = hashlib.sha256(f"v{CACHE_FORMAT}|{channels}|{preprocess_spec}".encode())
    for record in records:
        stat = record.path.stat()
        digest.update(f"{record.key}|{record.label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
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
        meta = json.loads(meta_path.read_text())
        images = np.load(array_path, mmap_mode="r")
        if list(images.shape) == meta["shape"]:
            log.info("cache hit: %s (%d samples, no decoding)", array_path, len(meta["keys"]))
            report = DecodeReport(skipped=[tuple(s) for s in meta["skipped"]],
                                  stored_gray_rgb=meta["stored_gray_rgb"], colour_converted=meta["colour_converted"])
            return SplitArrays(np.ascontiguousarray(images), np.asarray(meta["labels"], dtype=np.int64),
                               meta["keys"], report)
        log.warning("cache %s does not match its manifest; rebuilding", array_path)
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


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)
