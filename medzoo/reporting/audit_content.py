"""What report.html shows for `medzoo audit`: the audit's own document (the text of report.md, its label-issue
thumbnails embedded) and the duplicate and label-conflict pairs side by side, as thumbnails of the two files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medzoo.audit.document import Document, Picture
from medzoo.audit.duplicates import Pair
from medzoo.audit.report import AuditResult, pair_scope
from medzoo.datasets.folder_scan import FileRecord
from medzoo.reporting.content import run_section
from medzoo.reporting.render import file_thumbnail, number, png_file_uri, write_report

MAX_PAIRS = 24  # pairs shown side by side (48 thumbnails); pairs.csv lists them all


def document_blocks(doc: Document, run_dir: Path) -> list[dict[str, Any]]:
    """The document's blocks for the template; a table's Picture cell becomes an embedded image."""
    blocks = []
    for kind, body in doc.blocks:
        if kind != "table":
            blocks.append({"kind": kind, "body": body})
            continue
        header, rows = body
        blocks.append({"kind": kind, "header": [str(h) for h in header],
                       "rows": [[_cell(value, run_dir) for value in row] for row in rows]})
    return blocks


def _cell(value: Any, run_dir: Path) -> dict[str, Any]:
    if isinstance(value, Picture):
        path = (run_dir / value.path).resolve()
        inside = path.is_relative_to(run_dir.resolve())
        return {"uri": png_file_uri(path) if inside else None, "text": value.alt, "number": False}
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {"uri": None, "text": number(value), "number": is_number}


def pair_order(pair: Pair) -> tuple:
    """Label conflicts first, then leaks across splits, then exact before near copies."""
    return (not pair.label_conflict, not pair.cross_split, pair.kind != "exact", pair.aligned)


def pair_views(result: AuditResult, records: Sequence[FileRecord]) -> list[dict[str, Any]]:
    """The first MAX_PAIRS pairs by `pair_order`, each with thumbnails of both files."""
    facts, classes = result.facts, result.classes
    paths = {record.key: record.path for record in records}
    shown = []
    for pair in sorted(result.duplicates.pairs, key=pair_order)[:MAX_PAIRS]:
        sides = []
        for index in (pair.a, pair.b):
            fact = facts[index]
            path = paths.get(fact.key)
            sides.append({"key": fact.key, "label": classes[fact.label],
                          "uri": file_thumbnail(path) if path is not None else None})
        shown.append({"a": sides[0], "b": sides[1], "kind": pair.kind, "scope": pair_scope(pair, facts),
                      "label_conflict": pair.label_conflict, "aligned": pair.aligned})
    return shown


def audit_report(run_dir: Path, cfg: DictConfig, result: AuditResult, doc: Document,
                 records: Sequence[FileRecord]) -> Path | None:
    """report.html of `medzoo audit`; `records` are the audited files in the order of `result.facts`."""
    def build() -> dict[str, Any]:
        pairs = result.duplicates.pairs
        return {"title": doc.title, "kind": "audit", "run": run_section(run_dir, "audit", cfg),
                "blocks": document_blocks(doc, run_dir), "pairs": pair_views(result, records),
                "pairs_total": len(pairs), "conflicts_total": sum(p.label_conflict for p in pairs)}

    return write_report(run_dir, "audit.html.j2", build)
