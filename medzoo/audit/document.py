"""A tiny document model rendered both as Markdown and as a standalone HTML page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

STYLE = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;"
         "text-align:left}th{background:#f2f2f2}td.n{text-align:right}code{background:#f5f5f5}")


@dataclass(frozen=True)
class Picture:
    """An image file beside the report (a path relative to it), usable as a table cell."""

    path: str
    alt: str = ""
    width: int | None = None


class Document:
    """Headings, paragraphs, bullet lists and tables, kept as blocks until rendered."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, text: str) -> None:
        """A section heading."""
        self.blocks.append(("heading", text))

    def text(self, text: str) -> None:
        """A paragraph of plain text."""
        self.blocks.append(("text", text))

    def bullets(self, items: Sequence[str]) -> None:
        """A bullet list."""
        self.blocks.append(("bullets", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A table; numbers are right-aligned in HTML."""
        self.blocks.append(("table", (list(header), [list(row) for row in rows])))

    def markdown(self) -> str:
        """The document as GitHub-flavoured Markdown."""
        out = [f"# {self.title}", ""]
        for kind, body in self.blocks:
            if kind == "heading":
                out += [f"## {body}", ""]
            elif kind == "text":
                out += [body, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in body] + [""]
            else:
                header, rows = body
                out.append("| " + " | ".join(map(_md_cell, header)) + " |")
                out.append("|" + "|".join("---:" if rows and _is_number(rows[0][i]) else "---"
                                          for i in range(len(header))) + "|")
                out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows] + [""]
        return "\n".join(out)

    def html(self) -> str:
        """The document as one standalone HTML page."""
        out = ["<!doctype html>", '<html><head><meta charset="utf-8">', f"<title>{html.escape(self.title)}</title>",
               f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(self.title)}</h1>"]
        for kind, body in self.blocks:
            if kind == "heading":
                out.append(f"<h2>{html.escape(body)}</h2>")
            elif kind == "text":
                out.append(f"<p>{html.escape(body)}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in body) + "</ul>")
            else:
                header, rows = body
                out.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
                for row in rows:
                    cells = "".join(f'<td class="n">{_text(c)}</td>' if _is_number(c) else f"<td>{_text(c)}</td>"
                                    for c in row)
                    out.append(f"<tr>{cells}</tr>")
                out.append("</table>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _picture_html(picture: Picture) -> str:
    width = f' width="{picture.width}"' if picture.width else ""
    return f'<img src="{html.escape(picture.path)}" alt="{html.escape(picture.alt)}"{width}>'


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    return _picture_html(value) if isinstance(value, Picture) else html.escape(_format(value))


def _md_cell(value: Any) -> str:
    if isinstance(value, Picture):
        # Markdown image syntax: the link text must not close the bracket, the path goes in <...>.
        alt = value.alt.replace("[", "(").replace("]", ")").replace("|", "/")
        return f"![{alt}](<{value.path}>)"
    return _format(value).replace("|", "\\|")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
