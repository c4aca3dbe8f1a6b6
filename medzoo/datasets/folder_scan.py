"""Scan `Training/<class>/*` and `Testing/<class>/*` image folders into labelled file lists.

The data root is untrusted input: a symlink that leads out of it, a broken symlink, or an entry that is not a
regular file (a pipe would block a read) is never followed. With `on_error="raise"` it is a DataError naming
the entry and the fix; with `on_error="skip"` it is left out and listed in `SplitScan.skipped`, so that the
caller can count and report it. Entries that are not images (README.txt, .DS_Store, subfolders) are listed in
`SplitScan.ignored`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from medzoo.datasets.images import IMAGE_EXTENSIONS
from medzoo.errors import ConfigError, DataError

ON_ERROR = ("raise", "skip")
# How many problem entries a DataError lists by name (the count is always given).
LISTED = 5


@dataclass(frozen=True)
class FileRecord:
    """One labelled file; `key` is its path relative to the data root (`split/class/file`)."""

    path: Path
    label: int
    key: str


@dataclass
class SplitScan:
    """One split's records and classes, plus what was not used: `skipped` (key, reason) and `ignored` keys."""

    records: list[FileRecord]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def unsafe_entry(entry: Path, root: Path) -> str | None:
    """Why `entry` under the (resolved) data `root` must not be read, or None when it is safe."""
    if entry.is_symlink():
        try:
            target = entry.resolve(strict=True)
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop on older Pythons
            return f"broken symlink to {os.readlink(entry)} (the target is missing or loops)"
        if not target.is_relative_to(root):
            return f"symlink to {target}, outside the data root {root}"
    if not (entry.is_file() or entry.is_dir()):
        return "not a regular file or folder (a pipe, socket or device)"
    return None


def _raise_unsafe(problems: list[tuple[str, str]], root: Path) -> None:
    shown = "; ".join(f"{key}: {reason}" for key, reason in problems[:LISTED])
    more = f" (and {len(problems) - LISTED} more)" if len(problems) > LISTED else ""
    raise DataError(f"{len(problems)} unsafe entr{'y' if len(problems) == 1 else 'ies'} under the data root {root}: "
                    f"{shown}{more}. Links are not followed out of the data root: copy the files in, point "
                    "data.root at a folder that holds the targets too, or set data.on_error=skip to skip (and "
                    "report) such entries.")


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _class_files(folder: Path, root: Path, resolved: Path, scan: SplitScan) -> list[Path]:
    """The image files of one class folder; unsafe ones go to `scan.skipped`, non-images to `scan.ignored`."""
    files = []
    for entry in sorted(folder.iterdir()):
        if entry.suffix.lower() not in IMAGE_EXTENSIONS:  # README.txt, .DS_Store, a subfolder
            scan.ignored.append(_key(entry, root))
            continue
        problem = unsafe_entry(entry, resolved)
        if problem:
            scan.skipped.append((_key(entry, root), problem))
        elif entry.is_file():
            files.append(entry)
        else:  # a folder named like an image
            scan.ignored.append(_key(entry, root))
    return files


def _class_folders(split_dir: Path, root: Path, resolved: Path, scan: SplitScan) -> list[Path]:
    """The class folders of a split; unsafe links go to `scan.skipped`, other entries to `scan.ignored`."""
    folders = []
    for entry in sorted(split_dir.iterdir()):
        problem = None if entry.name.startswith(".") else unsafe_entry(entry, resolved)
        if problem:
            scan.skipped.append((_key(entry, root), problem))
        elif entry.is_dir() and not entry.name.startswith("."):
            folders.append(entry)
        else:
            scan.ignored.append(_key(entry, root))
    return folders


def list_class_folders(split_dir: Path, class_map: Mapping[str, str], root: Path | None = None,
                       on_error: str = "raise") -> tuple[dict[str, list[Path]], SplitScan]:
    """Map canonical class name -> image files in `split_dir`, applying `class_map` to folder names.

    Also returns a `SplitScan` (without records) that lists the skipped and ignored entries.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"data.on_error must be 'raise' or 'skip', not {on_error!r}")
    root = split_dir.parent if root is None else root
    resolved = root.resolve()
    if not split_dir.is_dir():
        raise DataError(f"split folder not found: {split_dir}. Expected <data.root>/{split_dir.name}/<class>/*.jpg; "
                        "check data.root (or MEDZOO_DATA) and data.train_dir / data.test_dir.")
    problem = unsafe_entry(split_dir, resolved)
    if problem:  # a whole split cannot be skipped
        _raise_unsafe([(split_dir.name, problem)], root)
    scan = SplitScan([], [])
    per_folder = {folder: _class_files(folder, root, resolved, scan)
                  for folder in _class_folders(split_dir, root, resolved, scan)}
    if scan.skipped and on_error != "skip":
        _raise_unsafe(scan.skipped, root)
    classes: dict[str, list[Path]] = {}
    for folder, files in per_folder.items():
        if not files:
            skipped = [key for key, _ in scan.skipped if key.startswith(_key(folder, root) + "/")]
            unusable = f"; {len(skipped)} unsafe entries skipped, e.g. {skipped[0]}" if skipped else ""
            raise DataError(f"empty class folder: {folder} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                            f"{unusable}. Add images, remove the folder, or map it onto another class with "
                            "data.class_map.")
        classes.setdefault(class_map.get(folder.name, folder.name), []).extend(files)
    if not classes:
        raise DataError(f"no class folders in {split_dir}: expected {split_dir}/<class>/*.jpg.")
    return classes, scan


def scan_folders(root: Path, split_dir: str, class_map: Mapping[str, str], classes: list[str] | None = None,
                 on_error: str = "raise") -> SplitScan:
    """Records of one split, and what was skipped or ignored; with `classes` given, the split must hold
    exactly those classes."""
    found, scan = list_class_folders(root / split_dir, class_map, root, on_error)
    if classes is None:
        classes = sorted(found)
    missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
    if missing:
        raise DataError(f"{root / split_dir}: class(es) {missing} are in the training folder but missing here. "
                        "Every class needs test images; add the folder or map names with data.class_map.")
    if extra:
        raise DataError(f"{root / split_dir}: class(es) {extra} are not in the training classes {classes}. "
                        "Map folder names onto training classes with data.class_map (e.g. notumor: no_tumor).")
    scan.records = [FileRecord(path, classes.index(name), _key(path, root))
                    for name in classes for path in found[name]]
    scan.classes = classes
    return scan


def scan_split(root: Path, split_dir: str, class_map: Mapping[str, str],
               classes: list[str] | None = None) -> tuple[list[FileRecord], list[str]]:
    """Records and class names of one split; any unsafe entry is a DataError (see `scan_folders` to skip)."""
    scan = scan_folders(root, split_dir, class_map, classes, on_error="raise")
    return scan.records, scan.classes
