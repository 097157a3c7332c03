"""The model card, built from recorded facts only, rendered as Markdown and HTML from one structure."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Card:
    """A sequence of blocks: headings, paragraphs, bullet lists, tables and user-written Markdown."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Add a heading."""
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        """Add a paragraph."""
        self.blocks.append(("para", text))

    def bullets(self, items: list[str]) -> None:
        """Add a bullet list."""
        self.blocks.append(("bullets", items))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        """Add a table."""
        self.blocks.append(("table", (headers, rows)))

    def markdown(self, text: str) -> None:
        """Add user-written Markdown (headings, paragraphs and bullets are understood for HTML)."""
        self.blocks.append(("markdown", text))

    def to_markdown(self) -> str:
        """Render as GitHub-flavoured Markdown."""
        out = []
        for kind, value in self.blocks:
            if kind == "heading":
                out.append(f"{'#' * value[0]} {value[1]}")
            elif kind == "para":
                out.append(value)
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                headers, rows = value
                lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
                lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
                out.append("\n".join(lines))
            else:
                out.append(value.strip())
        return "\n\n".join(out) + "\n"

    def to_html(self, title: str) -> str:
        """Render as a standalone HTML page (no external assets)."""
        body = []
        for kind, value in self.blocks:
            if kind == "heading":
                body.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "para":
                body.append(f"<p>{html.escape(value)}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                headers, rows = value
                head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                cells = "".join("<tr>" + "".join(f"<td>{html.escape(cell(c))}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            else:
                body.append(_markdown_to_html(value))
        style = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;line-height:1.4}"
                 "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
                 "th{background:#f3f3f3}")  # fmt: skip
        return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


def cell(value: Any) -> str:
    """A table cell: floats to 4 decimals, None and NaN as n/a."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _markdown_to_html(text: str) -> str:
    out: list[str] = []
    items: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{html.escape(' '.join(para))}</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.strip().splitlines():
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if not stripped:
            flush()
        elif heading:
            flush()
            level = len(heading.group(1))
            out.append(f"<h{level}>{html.escape(heading.group(2))}</h{level}>")
        elif stripped.startswith(("- ", "* ")):
            if para:
                flush()
            items.append(stripped[2:])
        elif items and line.startswith(" "):
            items[-1] += " " + stripped
        else:
            if items:
                flush()
            para.append(stripped)
    flush()
    return "\n".join(out)
