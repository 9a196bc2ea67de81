"""JSON reports: the shipped schema matches the Report model, and reports validate."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.json_report import (
    ReportValidationError,
    build_schema,
    load_schema,
    report_dict,
    to_json,
    validate_report_json,
    validation_errors,
)


def test_shipped_schema_matches_the_report_model() -> None:
    assert load_schema() == build_schema(), (
        "report/schema.json is stale; run: python -m mlwarden.report.json_report --write-schema"
    )


def test_shipped_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(load_schema())


def test_report_with_numpy_nan_and_images_validates(make_report: Callable[..., Report]) -> None:
    data = json.loads(to_json(make_report()))

    validate_report_json(data)
    assert data["metrics"]["inf"] is None
    assert data["metrics"]["evasion"]["clean_accuracy"] == pytest.approx(0.98)
    assert data["findings"][0]["evidence"]["nan"] is None


def test_empty_report_validates() -> None:
    validate_report_json(report_dict(Report.new("scan")))


def test_json_round_trips_through_the_report_model(make_report: Callable[..., Report]) -> None:
    report = make_report()
    again = Report.model_validate(json.loads(to_json(report)))

    assert [f.rule for f in again.findings] == [f.rule for f in report.findings]
    assert again.images == report.images
    assert again.severity_counts() == report.severity_counts()


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(key)


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("bad rule id", _set(["findings", 0, "rule"], "EVA-1")),
        ("unknown severity", _set(["findings", 0, "severity"], "urgent")),
        ("malformed ATLAS id", _set(["findings", 0, "atlas"], ["T0043"])),
        ("technique id as mitigation", _set(["findings", 0, "mitigations"], ["AML.T0043"])),
        ("image is a remote URL", _set(["images", "robust accuracy"], "https://x.test/a.png")),
        ("image is a file path", _set(["images", "robust accuracy"], "/tmp/a.png")),
        ("unknown top-level key", _set(["extra"], 1)),
        ("unknown finding key", _set(["findings", 0, "cvss"], 9.8)),
        ("missing findings", _drop("findings")),
        ("wrong schema version", _set(["schema_version"], "0.9")),
        ("unknown check status", _set(["checks", 0, "status"], "passed")),
        ("empty title", _set(["findings", 0, "title"], "")),
        ("seed is not an integer", _set(["seeds", "global"], "7")),
    ],
)
def test_schema_rejects(
    name: str, mutate: Callable[[dict[str, Any]], None], make_report: Callable[..., Report]
) -> None:
    doc = copy.deepcopy(report_dict(make_report()))
    mutate(doc)

    assert validation_errors(doc), f"schema accepted a report with {name}"
    with pytest.raises(ReportValidationError, match="not a valid mlwarden report"):
        validate_report_json(doc)


_text = st.text(max_size=40)
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), _text
)
_evidence = st.dictionaries(
    _text,
    st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3), max_leaves=6),
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(
    title=st.text(min_size=1, max_size=60),
    severity=st.sampled_from(list(Severity)),
    evidence=_evidence,
    metric=st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_finding_serialises_to_valid_strict_json(
    title: str, severity: Severity, evidence: dict[str, Any], metric: float
) -> None:
    report = Report.new("scan", seed=0)
    report.add(Finding(rule="MLW-SCN-001", title=title, severity=severity, evidence=evidence))
    report.metrics["m"] = metric

    text = to_json(report)  # allow_nan=False: raises on NaN/inf that slipped through
    validate_report_json(json.loads(text))
