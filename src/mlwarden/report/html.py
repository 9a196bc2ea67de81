"""HTML rendering: one self-contained file that reads offline.

The page is rendered from ``templates/report.html.j2`` with autoescaping on. Styles
are inline, plots are inline ``data:`` images and a Content-Security-Policy forbids
loading anything else, so the file shows the same with or without a network and
cannot phone home. It shows a summary with severity counts, every finding with its
MITRE ATLAS techniques and mitigations (id and name, from the catalogue), evidence
and recommendation, the report's images, metrics, checks, timings and environment.

Example::

    write_html(report, "report.html")
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jinja2

from mlwarden.core import atlas
from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.json_report import plain
from mlwarden.report.plots import is_data_uri

SEVERITY_COLOURS = {
    "critical": "#7b1fa2",
    "high": "#c62828",
    "medium": "#ef6c00",
    "low": "#1565c0",
    "info": "#546e7a",
}


def render_html(report: Report) -> str:
    """The report as one HTML document (a string)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mlwarden.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("report.html.j2")
    findings = sorted(report.findings, key=lambda f: (-f.severity.rank, f.rule))
    images = [(name, uri) for name, uri in report.images.items() if is_data_uri(uri)]
    skipped_images = [name for name, uri in report.images.items() if not is_data_uri(uri)]
    checks = report.checks
    worst = report.worst()
    return template.render(
        report=report,
        counts=report.severity_counts(),
        worst=worst.value if worst is not None else None,
        colours=SEVERITY_COLOURS,
        findings=[_finding_view(f) for f in findings],
        images=images,
        skipped_images=skipped_images,
        audio=_audio_examples(report),
        metrics=_flatten(plain(report.metrics)),
        suspicious=[
            {
                "index": s.get("index"),
                "score": float(s.get("score") or 0.0),
                "reasons": list(s.get("reasons") or []),
            }
            for s in (report.suspicious or [])[:50]
        ],
        suspicious_total=len(report.suspicious or []),
        data_issues=_data_issues(report.artifacts.get("data_issues")),
        set_aside=_set_aside(report.artifacts.get("set_aside")),
        text_examples=_text_examples(report.artifacts.get("text_examples")),
        timings=sorted(report.timings.items(), key=lambda kv: -(kv[1] or 0.0)),
        checks=checks,
        check_errors=sum(1 for c in checks if c.status == "error"),
        description=[
            ("Target", _flatten(plain(report.target))),
            ("Data", _flatten(plain(report.data))),
            ("Configuration", _flatten(plain(report.config))),
        ],
        environment=_flatten(plain(report.tool)),
        seeds=report.seeds,
        severities=[s.value for s in sorted(Severity, reverse=True)],
    )


def _text_examples(rows: Any) -> list[dict[str, Any]]:
    """Adversarial text examples as (word, changed) segments; the template escapes them."""
    if not isinstance(rows, list):
        return []
    out = []
    for row in rows[:50]:
        if not isinstance(row, dict):
            continue
        out.append(
            {
                "index": row.get("index"),
                "label": row.get("label"),
                "prediction": row.get("prediction"),
                "original": [(str(w), bool(c)) for w, c in row.get("original", [])],
                "adversarial": [(str(w), bool(c)) for w, c in row.get("adversarial", [])],
            }
        )
    return out


def _data_issues(issues: Any) -> list[dict[str, Any]]:
    """Up to 50 data-quality rows (label issues, duplicates, outliers) for the HTML table."""
    if not isinstance(issues, dict):
        return []
    rows = [
        {
            "kind": str(kind).replace("_", " "),
            "index": e.get("index"),
            "score": float(e.get("score") or 0.0),
            "reasons": list(e.get("reasons") or []),
        }
        for kind, entries in issues.items()
        if isinstance(entries, list)
        for e in entries[:20]
        if isinstance(e, dict)
    ]
    return rows[:50]


def _set_aside(rows: Any) -> dict[str, Any]:
    """Up to 20 of the rows broad detectors flagged that the poisoning list set aside
    (no specific detector confirms them), and how many there are."""
    if not isinstance(rows, list):
        return {"total": 0, "rows": []}
    keep = [r for r in rows if isinstance(r, dict)]
    return {
        "total": len(keep),
        "rows": [
            {
                "index": r.get("index"),
                "detectors": ", ".join(map(str, r.get("detectors") or [])),
                "why": str(r.get("why", "")),
            }
            for r in keep[:20]
        ],
    }


def _audio_examples(report: Report) -> list[dict[str, Any]]:
    """Original and adversarial clips (inline WAV data: URIs only) for audio players."""
    out = []
    for ex in (report.artifacts or {}).get("audio_examples", [])[:12]:
        if not isinstance(ex, dict):
            continue
        uris = [ex.get("original"), ex.get("adversarial")]
        if all(isinstance(u, str) and u.startswith("data:audio/wav;base64,") for u in uris):
            out.append(ex)
    return out


def write_html(report: Report, path: str | Path) -> None:
    """Write the HTML report atomically."""
    from mlwarden.report.output import write_text

    write_text(path, render_html(report))


def _finding_view(f: Finding) -> dict[str, Any]:
    return {
        "f": f,
        "techniques": [_atlas_view(i) for i in f.atlas],
        "mitigations": [_atlas_view(i) for i in f.mitigations],
        "evidence": [_value_view(k, v) for k, v in plain(f.evidence).items()],
    }


def _atlas_view(ident: str) -> dict[str, str]:
    if not atlas.is_known(ident):
        return {"id": ident, "name": "(not in mlwarden's ATLAS catalogue)", "description": ""}
    entry = atlas.get(ident)
    return {"id": ident, "name": entry.full_name, "description": entry.description}


def _value_view(key: str, value: Any) -> dict[str, Any]:
    if is_data_uri(value):
        return {"key": key, "kind": "image", "value": value}
    if isinstance(value, list) and len(value) <= 20 and all(_is_scalar(v) for v in value):
        return {"key": key, "kind": "text", "value": ", ".join(_format_scalar(v) for v in value)}
    if isinstance(value, dict | list):
        return {"key": key, "kind": "json", "value": json.dumps(rounded(value), indent=2)}
    return {"key": key, "kind": "text", "value": _format_scalar(value)}


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats inside lists and dicts to ``digits`` significant digits, for reading (the
    JSON report keeps full precision); ``0.9629629629629629`` -> ``0.963``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _format_scalar(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as ``(dotted.key, text)`` rows; lists stay whole (as JSON)."""
    rows: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                rows.extend(_flatten(value, name))
            elif isinstance(value, list | dict):
                rows.append((name, json.dumps(rounded(value))))
            else:
                rows.append((name, _format_scalar(value)))
    return rows
