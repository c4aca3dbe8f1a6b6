"""What to prepare: `(path, label)` pairs from a folder of class folders or from a CSV."""

from __future__ import annotations

import logging
from pathlib import Path

from medzoo.datasets.csv_table import read_csv_rows
from medzoo.datasets.folder_scan import unsafe_entry
from medzoo.datasets.prepared_store.sample_files import (
    LISTED,
)
from medzoo.datasets.readers.registry import READERS, reader_for
from medzoo.errors import DataError

log = logging.getLogger(__name__)

Source = tuple[str | Path, str | int]


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


def _refused(entry: Path, resolved: Path, key: str, unsafe: list[tuple[str, str]]) -> bool:
    """Whether `entry` must not be read (a link out of the inputs folder `resolved`, a pipe); if so it is
    listed in `unsafe` with the reason."""
    problem = unsafe_entry(entry, resolved)
    if problem:
        unsafe.append((key, problem))
    return problem is not None


def sources_from_folder(inputs: str | Path) -> tuple[list[Source], list[str]]:
    """`(path, class name)` for every `inputs/<class>/<file or DICOM folder>`, and the entries ignored (links
    that lead out of `inputs` among them: they are never followed)."""
    root = Path(inputs).expanduser()
    if not root.is_dir():
        raise DataError(f"inputs folder not found: {root}. Set inputs=DIR holding <class>/<file or DICOM "
                        "folder>.")
    resolved = root.resolve()
    sources: list[Source] = []
    ignored: list[str] = []
    unsafe: list[tuple[str, str]] = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or _refused(folder, resolved, folder.name, unsafe):
            continue
        if not folder.is_dir():
            ignored.append(folder.name)
            continue
        for entry in sorted(folder.iterdir()):
            key = f"{folder.name}/{entry.name}"
            if entry.name.startswith(".") or _refused(entry, resolved, key, unsafe):
                continue
            if _is_candidate(entry):
                sources.append((entry, folder.name))
            else:
                ignored.append(key)
    if ignored:
        listing = ", ".join(ignored[:LISTED]) + (", ..." if len(ignored) > LISTED else "")
        log.warning("%s: ignored %d entr(ies) that are neither a class folder's image file nor a DICOM "
                    "folder: %s", root, len(ignored), listing)
    if unsafe:
        listing = "; ".join(f"{key} ({why})" for key, why in unsafe[:LISTED])
        listing += "; ..." if len(unsafe) > LISTED else ""
        log.warning("%s: ignored %d entr(ies) not followed out of the inputs folder (copy the files in, or "
                    "set inputs= to a folder that holds the targets too): %s", root, len(unsafe), listing)
        ignored += [key for key, _ in unsafe]
    if not sources:
        raise DataError(f"{root}: no sources found. Expected <class>/<file or DICOM folder>, with files of "
                        f"these types: {', '.join(s for spec in READERS.values() for s in spec.suffixes)}.")
    return sources, ignored


def sources_from_csv(labels: str | Path) -> list[Source]:
    """`(path, label)` rows of a CSV with columns `path,label`; relative paths start at the CSV's folder."""
    table = Path(labels).expanduser()
    if not table.is_file():
        raise DataError(f"labels CSV not found: {table}. Set labels=FILE.csv with columns path,label.")
    sources: list[Source] = []
    for _, row in read_csv_rows(table, ("path", "label"), "Give labels=FILE.csv with columns path,label."):
        resolved = Path(row["path"]).expanduser()
        sources.append((resolved if resolved.is_absolute() else table.parent / resolved, row["label"]))
    return sources
