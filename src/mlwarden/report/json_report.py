"""JSON rendering of a Report, and the JSON Schema every JSON report follows.

The schema ships in the package as ``report/schema.json``. It is generated from the
:class:`~mlwarden.core.findings.Report` model by :func:`build_schema` and tightened
where the model is loose (rule id and ATLAS id patterns, inline image URIs, check
status values, no unknown keys). A test keeps the shipped file equal to
:func:`build_schema`; after changing ``Report``, regenerate it with::

    python -m mlwarden.report.json_report --write-schema

Example::

    write_json(report, "report.json")
    validate_report_json(json.loads(Path("report.json").read_text()))  # raises if invalid
"""

from __future__ import annotations

import copy
import enum
import json
import math
import sys
from datetime import date, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.core.findings import RULE_ID, SCHEMA_VERSION, Report

SCHEMA_ID = f"urn:mlwarden:report:{SCHEMA_VERSION}"
ATLAS_TECHNIQUE_ID = r"^AML\.TA?\d{4}(\.\d{3})?$"
ATLAS_MITIGATION_ID = r"^AML\.M\d{4}$"
IMAGE_DATA_URI = r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]*={0,2}$"
CHECK_STATUSES = ("ok", "error", "skipped")


class ReportValidationError(ValueError):
    """A JSON document that does not follow the mlwarden report schema."""


def report_dict(report: Report) -> dict[str, Any]:
    """The report as plain JSON-ready data.

    NaN and infinities become null; numpy scalars and arrays, paths, enums and other
    values checks may leave in ``metrics`` or ``evidence`` become plain JSON values.
    """
    return plain(report.model_dump(mode="python"))  # type: ignore[no-any-return]


def to_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, sort_keys=False, allow_nan=False)


def write_json(report: Report, path: str | Path) -> None:
    """Write the report atomically (a temporary file renamed into place)."""
    from mlwarden.report.output import write_text

    write_text(path, to_json(report))


def build_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a JSON report, derived from the Report model."""
    schema = copy.deepcopy(Report.model_json_schema(mode="serialization"))
    defs = schema["$defs"]
    for node in (schema, defs["Finding"], defs["CheckRecord"]):
        node["additionalProperties"] = False
        # report_dict() always writes every field, so every field is required.
        node["required"] = list(node["properties"])
    props = schema["properties"]
    props["schema_version"] = {
        "const": SCHEMA_VERSION,
        "description": "Version of this schema; bumped when a field changes meaning.",
    }
    props["tool"]["required"] = ["name", "version"]
    props["images"]["additionalProperties"] = {
        "type": "string",
        "pattern": IMAGE_DATA_URI,
        "description": "An inline base64 image (data: URI); never a path or a remote URL.",
    }
    props["seeds"]["additionalProperties"] = {"type": "integer"}
    props["timings"]["additionalProperties"] = {"type": ["number", "null"], "minimum": 0}
    finding = defs["Finding"]["properties"]
    finding["rule"]["pattern"] = RULE_ID.pattern
    finding["atlas"]["items"] = {"type": "string", "pattern": ATLAS_TECHNIQUE_ID}
    finding["mitigations"]["items"] = {"type": "string", "pattern": ATLAS_MITIGATION_ID}
    finding["title"]["minLength"] = 1
    check = defs["CheckRecord"]["properties"]
    check["status"]["enum"] = list(CHECK_STATUSES)
    check["seconds"]["type"] = ["number", "null"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "mlwarden report",
        **schema,
    }


@cache
def load_schema() -> dict[str, Any]:
    """The schema shipped in the package (``mlwarden/report/schema.json``)."""
    text = resources.files("mlwarden.report").joinpath("schema.json").read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def validation_errors(data: Any) -> list[str]:
    """Every way ``data`` breaks the report schema, as ``path: message`` lines."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(
        load_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def validate_report_json(data: Any) -> None:
    """Raise :class:`ReportValidationError` listing every problem if ``data`` is not a valid report."""
    problems = validation_errors(data)
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ReportValidationError(f"not a valid mlwarden report: {shown}{more}")


def plain(value: Any) -> Any:
    """``value`` as plain JSON data: NaN/inf to null, numpy to lists/numbers, others to str."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return plain(value.tolist())
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _main(argv: list[str]) -> int:
    if argv != ["--write-schema"]:
        print("usage: python -m mlwarden.report.json_report --write-schema", file=sys.stderr)
        return 2
    target = Path(__file__).with_name("schema.json")
    target.write_text(json.dumps(build_schema(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
