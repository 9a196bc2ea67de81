"""JSON rendering of a Report (schema: ``report/schema.json``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mlwarden.core.findings import Report


def report_dict(report: Report) -> dict[str, Any]:
    """The report as plain JSON-ready data (NaN and infinities become null)."""
    return _clean(report.model_dump(mode="json"))


def to_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, sort_keys=False, allow_nan=False)


def write_json(report: Report, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_json(report), encoding="utf-8")
    tmp.replace(path)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
