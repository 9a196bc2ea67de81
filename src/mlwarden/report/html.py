"""HTML rendering (placeholder until the report renderer lands)."""

from __future__ import annotations

import html
from pathlib import Path

from mlwarden.core.findings import Report


def write_html(report: Report, path: str | Path) -> None:
    rows = "".join(
        f"<li>{html.escape(f.severity.value)} {html.escape(f.rule)}: {html.escape(f.title)}</li>"
        for f in report.findings
    )
    Path(path).write_text(
        f"<!doctype html><html><body><ul>{rows}</ul></body></html>", encoding="utf-8"
    )
