"""CSV files someone else wrote (a slice list, a labels file), read as untrusted input: bounded in size before
reading, UTF-8 only, every expected column present and filled, each problem one DataError naming the line."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from medzoo.errors import DataError

# A list of files larger than this is refused before it is read (some 100 bytes a row: millions of rows).
MAX_CSV_BYTES = 256 * 2**20


def read_csv_rows(table: Path, columns: Sequence[str], fix: str) -> list[tuple[int, dict[str, str]]]:
    """(line, row) of every row of a CSV someone else wrote, names and values stripped, each row holding a
    non-empty value of every one of `columns`. Its size is bounded before it is read; a file that is not UTF-8
    text (a BOM is allowed), holds a NUL or an over-long field, or lacks a column is a DataError naming the
    file, the line and `fix`."""
    try:
        with open(table, "rb") as handle:  # read no more than the limit, whatever the file's size
            data = handle.read(MAX_CSV_BYTES + 1)
    except OSError as exc:
        raise DataError(f"{table}: cannot read it ({exc.strerror or exc}). {fix}") from exc
    if len(data) > MAX_CSV_BYTES:
        raise DataError(f"{table}: more than {MAX_CSV_BYTES / 2**20:.0f} MiB, too large for a list of files; "
                        f"refusing to read it. {fix}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{table}, line {line}: byte 0x{data[exc.start]:02x} is not UTF-8; save the file as "
                        f"UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet). {fix}") from exc
    if "\0" in text:  # the csv module passes NUL through, and no path may hold one
        line = text[:text.index("\0")].count("\n") + 1
        raise DataError(f"{table}, line {line}: a NUL character, so not a text CSV (a binary or UTF-16 "
                        f"file?). {fix}")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        names = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{table}: column(s) {missing} missing from the header (found "
                            f"{names or 'no header'}); expected {', '.join(columns)}. {fix}")
        reader.fieldnames = names
        for row in reader:
            row = {k: v.strip() for k, v in row.items() if isinstance(k, str) and isinstance(v, str)}
            empty = [c for c in columns if not row.get(c)]
            if empty:
                raise DataError(f"{table}, line {reader.line_num}: no value in column(s) {empty} (a short or "
                                f"blank row). {fix}")
            rows.append((reader.line_num, row))
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit(), read whole otherwise
        # line_num counts the lines of the rows read before the one that failed
        raise DataError(f"{table}, line {reader.line_num + 1}: not a valid CSV ({exc}). {fix}") from exc
    if not rows:
        raise DataError(f"{table}: no rows after the header. {fix}")
    return rows
