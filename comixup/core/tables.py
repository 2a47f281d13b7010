"""Tables as text, Markdown or CSV, for the commands that print one (compare.py, evaluate.py)."""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence

__all__ = ["TABLE_FORMATS", "render_table"]

TABLE_FORMATS = ("text", "markdown", "csv")


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], fmt: str) -> str:
    """``header`` and ``rows`` (cells already formatted) as ``fmt``, one of TABLE_FORMATS: text
    (columns padded to their widest cell, two spaces apart), a Markdown table, or CSV."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "markdown":
        lines = [_markdown_row(header), "|" + "|".join(" --- " for _ in header) + "|"]
        return "\n".join(lines + [_markdown_row(row) for row in rows]) + "\n"
    if fmt != "text":
        raise ValueError(f"table format must be one of {', '.join(TABLE_FORMATS)}, got {fmt!r}")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
                     for row in [header, *rows]) + "\n"
