"""Shared helpers for the report tests: sample reports and the official SARIF schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft7Validator

from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.plots import line_plot

#: The official OASIS SARIF 2.1.0 schema (oasis-tcs/sarif-spec,
#: Documents/CommitteeSpecifications/2.1.0/sarif-schema-2.1.0.json), kept as test data.
SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"


def sarif_errors(log: Any) -> list[str]:
    """Every way ``log`` breaks the official SARIF 2.1.0 schema (formats checked too)."""
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    validator = Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(log)
    ]


@pytest.fixture
def check_sarif() -> Callable[[Any], list[str]]:
    return sarif_errors


def sample_report(tmp_path: Path | None = None) -> Report:
    """A report with one finding of every severity, two checks (one failed) and a plot."""
    report = Report.new("evasion", seed=7)
    artifact = None
    if tmp_path is not None:
        artifact = tmp_path / "models" / "my model.pt"
        artifact.parent.mkdir(parents=True, exist_ok=True)
        artifact.write_bytes(b"not really a model")
    specs = [
        ("MLW-EVA-001", Severity.CRITICAL, ["AML.T0043.000", "AML.T0015"], ["AML.M0003"]),
        ("MLW-EVA-002", Severity.HIGH, ["AML.T0043.001"], ["AML.M0004"]),
        ("MLW-EVA-003", Severity.MEDIUM, ["AML.T0015"], []),
        ("MLW-EVA-004", Severity.LOW, [], []),
        ("MLW-EVA-005", Severity.INFO, ["AML.T0040"], []),
    ]
    for rule, severity, atlas_ids, mitigations in specs:
        report.add(
            Finding(
                rule=rule,
                title=f"{severity.value} finding <script>alert(1)</script>",
                severity=severity,
                atlas=atlas_ids,
                mitigations=mitigations,
                description=f"What happened ({severity.value}).",
                recommendation=f"Fix it ({rule}).",
                evidence={"robust_accuracy": 0.125, "eps": [0.1, 0.3], "nan": float("nan")},
                artifact=str(artifact) if artifact and severity >= Severity.HIGH else "digits_cnn",
                check="pgd" if severity >= Severity.MEDIUM else "square",
            )
        )
    with report.timed("pgd"):
        pass
    report.checks.append(
        report.checks[0].model_copy(update={"name": "square", "status": "error", "message": "boom"})
    )
    report.metrics["evasion"] = {"clean_accuracy": np.float32(0.98), "robust": {"pgd": 0.125}}
    report.metrics["inf"] = float("inf")
    report.images["robust accuracy"] = line_plot({"PGD": ([0.0, 0.1], [0.98, 0.1])})
    return report


@pytest.fixture
def make_report() -> Callable[..., Report]:
    return sample_report
