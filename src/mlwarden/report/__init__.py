"""Render a :class:`~mlwarden.core.findings.Report` as JSON, HTML, SARIF or JUnit XML.

Renderers never compute metrics; they only present what the report holds.
"""

from __future__ import annotations

from pathlib import Path

from mlwarden.core.findings import Report, Severity


def write_reports(
    report: Report,
    *,
    json_path: Path | None = None,
    html_path: Path | None = None,
    sarif_path: Path | None = None,
    junit_path: Path | None = None,
    fail_on: Severity | None = None,
) -> list[Path]:
    """Write every requested format; returns the paths written."""
    written: list[Path] = []
    if json_path is not None:
        from mlwarden.report.json_report import write_json

        write_json(report, json_path)
        written.append(json_path)
    if html_path is not None:
        from mlwarden.report.html import write_html

        write_html(report, html_path)
        written.append(html_path)
    if sarif_path is not None:
        from mlwarden.report.sarif import write_sarif

        write_sarif(report, sarif_path)
        written.append(sarif_path)
    if junit_path is not None:
        from mlwarden.report.junit import write_junit

        write_junit(report, junit_path, fail_on=fail_on or Severity.HIGH)
        written.append(junit_path)
    return written
