"""ATLAS case studies: shipped as package data, matched to findings by technique, shown
in JSON, HTML and on the terminal."""

from __future__ import annotations

import json
import re

from mlwarden.core import atlas
from mlwarden.core.findings import Finding, Report, Severity


def test_all_57_case_studies_load_with_facts():
    studies = atlas.case_studies()
    assert len(studies) == 57
    assert len({c.id for c in studies}) == 57
    for c in studies:
        assert re.fullmatch(r"AML\.CS\d{4}", c.id) and c.name and c.url.endswith(c.id)
        assert all(re.fullmatch(r"AML\.T\d{4}(\.\d{3})?", t) for t in c.techniques)


def test_matches_share_a_technique_or_its_parent():
    ids = ["AML.T0043"]  # Craft Adversarial Data: its sub-techniques count
    found = atlas.case_studies_for(ids, limit=10)
    assert found
    for c in found:
        assert any(t == "AML.T0043" or t.startswith("AML.T0043.") for t in c.techniques)
    assert atlas.case_studies_for(["AML.M0007"]) == []  # mitigations name no attack


def test_more_shared_techniques_rank_first():
    ids = ["AML.T0010.003", "AML.T0011.000"]
    first = atlas.case_studies_for(ids, limit=1)[0]
    assert all(any(t == i or t.startswith(i + ".") for t in first.techniques) for i in ids)


def test_findings_carry_case_studies_into_json_and_html(tmp_path):
    from mlwarden.report.html import render_html

    report = Report.new(command="scan")
    report.add(
        Finding(
            rule="MLW-SCN-001",
            title="pickle imports os.system",
            severity=Severity.CRITICAL,
            atlas=["AML.T0011.000", "AML.T0010.003"],
        )
    )
    f = report.findings[0]
    assert f.case_studies and {"id", "name", "url"} <= set(f.case_studies[0])
    data = json.loads(report.model_dump_json())
    assert data["findings"][0]["case_studies"] == f.case_studies
    html = render_html(report)
    assert f.case_studies[0]["url"] in html and "Real-world case studies" in html
    # given explicitly, they are kept as given
    g = Finding(
        rule="MLW-SCN-001",
        title="t",
        severity=Severity.LOW,
        atlas=["AML.T0011.000"],
        case_studies=[{"id": "x", "name": "y", "url": ""}],
    )
    assert g.case_studies == [{"id": "x", "name": "y", "url": ""}]


def test_terminal_summary_names_case_studies(capsys):
    from mlwarden.cli.common import print_summary

    report = Report.new(command="evasion")
    report.add(Finding(rule="MLW-EVA-001", title="t", severity=Severity.HIGH, atlas=["AML.T0015"]))
    print_summary(report)
    err = capsys.readouterr().err
    assert "MITRE ATLAS case studies" in err
    assert report.findings[0].case_studies[0]["id"] in err
