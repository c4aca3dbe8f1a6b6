"""`prepare`: decode sources into the cache, resuming an earlier run and repairing what it finds damaged."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medzoo.datasets.prepared_store.manifest import (
    MANIFEST,
    read_earlier_manifest,
    write_manifest,
)
from medzoo.datasets.prepared_store.sample_files import (
    FORMAT,
    FORMAT_VERSION,
    LISTED,
    SAMPLES,
    VERIFY,
    file_name,
    make_samples_folder,
    meta_value,
    sample_problem,
    source_sha256,
    source_signature,
    write_npy,
)
from medzoo.datasets.prepared_store.sources import Source
from medzoo.datasets.readers.registry import READERS, read_volume
from medzoo.errors import ConfigError, DataError
from medzoo.progress import progress as show_progress
from medzoo.transforms.layout import DEPTH_MODES, canonical_layout

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "image", "volume", "slices")
ON_ERROR = ("raise", "skip")
# Rewriting the whole manifest after every sample is quadratic in the sample count; a crash loses at most
# this much finished work (the samples written since the last rewrite are redone).
CHECKPOINT_SECONDS = 2.0


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
    make_samples_folder(out)
    for stale in (out / SAMPLES).glob("*.tmp"):
        stale.unlink()  # a sample being written when an earlier run stopped
    settings = {"reader": reader, "reader_kwargs": dict(reader_kwargs or {}), "layout": layout,
                "channels": channels, "depth_mode": depth_mode, "in_chans": in_chans,
                "dtype": None if dtype is None else str(np.dtype(dtype))}
    settings = json.loads(json.dumps(settings))  # compared with the manifest's copy, where tuples are lists
    manifest_path = out / MANIFEST
    old = read_earlier_manifest(manifest_path)
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
        for path, key, label, name in show_progress(resolved, desc="prepare", unit="samples", enabled=progress):
            entry = entries.get(key)
            file = out / SAMPLES / file_name(key)
            signature = source_signature(path) if path.exists() else None
            # A source deleted after preparing (to save space) keeps its intact cached copy.
            if entry is not None and (signature is None or entry["source_signature"] == signature):
                problem = sample_problem(entry, file, verify)
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
                write_manifest(manifest_path, manifest(complete=False))
                last_write = time.monotonic()
        completed = True
    finally:
        if not completed:
            write_manifest(manifest_path, manifest(complete=False))
    final = manifest(complete=True)
    final["last_run"] = {**counts, "seconds": round(time.perf_counter() - started, 3)}
    write_manifest(manifest_path, final)
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
            "spacing": meta_value(meta.get("spacing")), "spacing_known": meta.get("spacing_known"),
            "orientation": meta.get("orientation"), "source": str(path), "source_sha256": source_sha256(path),
            "source_signature": signature, "source_shape": list(volume.array.shape)}

