"""What to prepare: `(path, label)` pairs from a folder of class folders or from a CSV."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

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

