"""Severity, Finding and Report: ordering, validation, timing and merging."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlwarden.core import atlas
from mlwarden.core.findings import Finding, Report, Severity


def test_severities_are_ordered() -> None:
    order = [Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]

    assert sorted(reversed(order)) == order
    assert Severity.HIGH > Severity.MEDIUM >= Severity.MEDIUM > Severity.INFO


@pytest.mark.parametrize("text", ["HIGH", " high ", "High"])
def test_severity_parses_case_insensitively(text: str) -> None:
    assert Severity.parse(text) is Severity.HIGH


def test_unknown_severity_names_the_choices() -> None:
    with pytest.raises(ValueError, match="expected one of: info, low, medium, high, critical"):
        Severity.parse("urgent")


@pytest.mark.parametrize("rule", ["MLW-EVA-1", "EVA-001", "MLW-eva-001", "MLW-TOOLONG-001"])
def test_rule_ids_must_follow_the_pattern(rule: str) -> None:
    with pytest.raises(ValidationError, match="MLW-<AREA>-<NNN>"):
        Finding(rule=rule, title="t", severity=Severity.LOW)


def test_uncatalogued_atlas_id_is_refused_at_construction() -> None:
    with pytest.raises(ValidationError, match="AML.T9999"):
        Finding(rule="MLW-EVA-001", title="t", severity=Severity.LOW, atlas=["AML.T9999"])
    with pytest.raises(ValidationError, match="AML.M9999"):
        Finding(rule="MLW-EVA-001", title="t", severity=Severity.LOW, mitigations=["AML.M9999"])


def test_report_counts_and_thresholds() -> None:
    report = Report.new("scan", seed=4)
    for i, sev in enumerate([Severity.LOW, Severity.HIGH, Severity.HIGH]):
        report.add(Finding(rule=f"MLW-SCN-{i:03d}", title="t", severity=sev))

    assert report.worst() is Severity.HIGH
    assert report.severity_counts() == {"critical": 0, "high": 2, "medium": 0, "low": 1, "info": 0}
    assert len(report.at_or_above(Severity.MEDIUM)) == 2
    assert report.seeds == {"global": 4}
    assert report.tool["name"] == "mlwarden" and report.tool["version"]


def test_timed_records_a_check_and_its_failure() -> None:
    report = Report.new("scan")
    with report.timed("ok-step"):
        pass
    with pytest.raises(RuntimeError), report.timed("bad-step"):
        raise RuntimeError("boom")

    assert [(c.name, c.status) for c in report.checks] == [("ok-step", "ok"), ("bad-step", "error")]
    assert "boom" in report.checks[1].message
    assert set(report.timings) == {"ok-step", "bad-step"}


def test_merge_prefixes_metrics_and_keeps_findings() -> None:
    main, part = Report.new("audit"), Report.new("evasion")
    part.add(Finding(rule="MLW-EVA-001", title="t", severity=Severity.LOW))
    part.metrics["acc"] = 0.5
    part.images["curve"] = "data:image/png;base64,AAAA"

    main.merge(part, prefix="evasion")

    assert main.metrics == {"evasion.acc": 0.5}
    assert len(main.findings) == 1 and main.images == part.images


def test_catalogue_lookup_and_sub_technique_names() -> None:
    entry = atlas.get("AML.T0043.000")

    assert entry.kind == "technique" and entry.full_name.startswith("Craft Adversarial Data: ")
    assert entry.url.endswith("/techniques/AML.T0043.000")
    with pytest.raises(KeyError, match="AML.T9999"):
        atlas.get("AML.T9999")


def test_catalogue_is_consistent() -> None:
    cat = atlas.catalogue()
    kinds = {"tactic": "AML.TA", "technique": "AML.T", "mitigation": "AML.M"}

    for ident, entry in cat.items():
        assert ident.startswith(kinds[entry.kind]), ident
        assert entry.name and entry.description, ident
        assert all(cat[t].kind == "tactic" for t in entry.tactics), ident
        if entry.kind == "technique" and ident.count(".") == 2:
            assert ident.rsplit(".", 1)[0] in cat, f"{ident} has no parent technique"


def test_catalogue_descriptions_are_whole_sentences() -> None:
    """An unquoted comma in atlas.yaml once cut descriptions short ("The adversary disrupts")."""
    for ident, entry in atlas.catalogue().items():
        assert entry.description.endswith("."), f"{ident}: {entry.description!r}"
