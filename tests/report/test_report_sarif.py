"""SARIF 2.1.0 output, validated against the official OASIS schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.sarif import LEVELS, sarif_log, write_sarif

Check = Callable[[Any], list[str]]


def test_report_with_findings_is_valid_sarif(
    make_report: Callable[..., Report], check_sarif: Check, tmp_path: Path
) -> None:
    path = tmp_path / "out.sarif"
    write_sarif(make_report(tmp_path), path)

    assert check_sarif(json.loads(path.read_text(encoding="utf-8"))) == []


def test_empty_report_is_valid_sarif(check_sarif: Check) -> None:
    log = sarif_log(Report.new("scan"))

    assert check_sarif(log) == []
    assert log["runs"][0]["results"] == []


def test_the_official_schema_rejects_broken_logs(
    make_report: Callable[..., Report], check_sarif: Check
) -> None:
    """The validator is not vacuous: a wrong level or a missing message is caught."""
    log = sarif_log(make_report())
    log["runs"][0]["results"][0]["level"] = "critical"
    del log["runs"][0]["results"][1]["message"]

    assert len(check_sarif(log)) >= 2


def test_one_run_with_a_rule_per_rule_id(make_report: Callable[..., Report]) -> None:
    log = sarif_log(make_report())

    assert log["version"] == "2.1.0" and len(log["runs"]) == 1
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    results = log["runs"][0]["results"]
    assert sorted(r["id"] for r in rules) == sorted({r["ruleId"] for r in results})
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]


@pytest.mark.parametrize("severity", list(Severity))
def test_level_follows_severity(severity: Severity) -> None:
    report = Report.new("scan")
    report.add(Finding(rule="MLW-SCN-001", title="t", severity=severity))

    result = sarif_log(report)["runs"][0]["results"][0]
    assert result["level"] == LEVELS[severity]
    assert result["properties"]["severity"] == severity.value
    assert LEVELS[Severity.CRITICAL] == "error" and LEVELS[Severity.MEDIUM] == "warning"


def test_atlas_ids_are_properties_and_taxonomy_references(
    make_report: Callable[..., Report],
) -> None:
    run = sarif_log(make_report())["runs"][0]
    taxonomy = run["taxonomies"][0]
    first = run["results"][0]

    assert first["properties"]["atlas"] == ["AML.T0043.000", "AML.T0015"]
    assert first["properties"]["atlas_mitigations"] == ["AML.M0003"]
    for ref in first["taxa"]:
        assert taxonomy["taxa"][ref["index"]]["id"] == ref["id"]
    assert "AML.T0043.000" in run["tool"]["driver"]["rules"][0]["properties"]["tags"]


def test_file_artifacts_get_locations_and_names_do_not(
    make_report: Callable[..., Report], tmp_path: Path
) -> None:
    results = sarif_log(make_report(tmp_path))["runs"][0]["results"]
    by_rule = {r["ruleId"]: r for r in results}

    uri = by_rule["MLW-EVA-001"]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri.endswith("models/my%20model.pt")
    assert "locations" not in by_rule["MLW-EVA-005"]  # artifact "digits_cnn" is a model name


def test_findings_without_a_file_point_at_the_model_examined(check_sarif: Check) -> None:
    report = Report.new("evasion")
    report.target = {"name": "cnn", "path": "models/cnn.pt"}
    report.add(Finding(rule="MLW-EVA-001", title="t", severity=Severity.HIGH, artifact="cnn"))
    report.add(Finding(rule="MLW-EVA-002", title="t", severity=Severity.LOW, artifact="data.npz"))

    results = sarif_log(report)["runs"][0]["results"]
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results]
    assert uris == ["models/cnn.pt", "data.npz"]
    assert check_sarif(sarif_log(report)) == []


@pytest.mark.parametrize(
    ("artifact", "has_location"),
    [
        ("models/cnn.onnx", True),
        ("data.npz", True),
        ("https://models.example/predict", False),
        ("digits_cnn", False),
        (None, False),
    ],
)
def test_location_only_for_paths(
    artifact: str | None, has_location: bool, check_sarif: Check
) -> None:
    report = Report.new("scan")
    report.add(Finding(rule="MLW-SCN-001", title="t", severity=Severity.HIGH, artifact=artifact))

    log = sarif_log(report)
    assert ("locations" in log["runs"][0]["results"][0]) is has_location
    assert check_sarif(log) == []


def test_failed_check_marks_the_invocation_unsuccessful(
    make_report: Callable[..., Report],
) -> None:
    invocation = sarif_log(make_report())["runs"][0]["invocations"][0]

    assert invocation["executionSuccessful"] is False
    assert "boom" in invocation["toolExecutionNotifications"][0]["message"]["text"]
