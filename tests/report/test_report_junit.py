"""JUnit XML: one test case per check, a failure per finding at or above --fail-on."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.junit import junit_xml

#: Jenkins xUnit plugin's JUnit schema (MIT), the one CI servers validate against.
JUNIT_XSD = Path(__file__).parent / "data" / "junit-10.xsd"


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(JUNIT_XSD))


@pytest.mark.parametrize("fail_on", [Severity.INFO, Severity.HIGH, Severity.CRITICAL])
def test_output_validates_against_the_jenkins_junit_schema(
    make_report: Callable[..., Report], junit_schema: xmlschema.XMLSchema, fail_on: Severity
) -> None:
    junit_schema.validate(junit_xml(make_report(), fail_on=fail_on))
    junit_schema.validate(junit_xml(Report.new("scan"), fail_on=fail_on))


def test_the_junit_schema_rejects_a_testcase_without_a_name(
    junit_schema: xmlschema.XMLSchema,
) -> None:
    bad = '<testsuites><testsuite name="s" tests="1" failures="0" errors="0"><testcase/></testsuite></testsuites>'

    assert not junit_schema.is_valid(bad)


def _cases(xml: str) -> dict[str, ET.Element]:
    root = ET.fromstring(xml)
    return {case.get("name", ""): case for case in root.iter("testcase")}


def test_one_testcase_per_check(make_report: Callable[..., Report]) -> None:
    cases = _cases(junit_xml(make_report()))

    assert sorted(cases) == ["pgd", "square"]


def test_failures_are_the_findings_at_or_above_fail_on(
    make_report: Callable[..., Report],
) -> None:
    cases = _cases(junit_xml(make_report(), fail_on=Severity.HIGH))

    assert [f.get("type") for f in cases["pgd"].iter("failure")] == ["MLW-EVA-001", "MLW-EVA-002"]
    assert list(cases["square"].iter("failure")) == []
    assert "MLW-EVA-003" in (cases["pgd"].findtext("system-out") or "")


def test_fail_on_info_fails_on_every_finding(make_report: Callable[..., Report]) -> None:
    root = ET.fromstring(junit_xml(make_report(), fail_on=Severity.INFO))

    assert len(list(root.iter("failure"))) == 5
    assert root.find("testsuite").get("failures") == "2"  # type: ignore[union-attr]


def test_crashed_check_is_an_error(make_report: Callable[..., Report]) -> None:
    cases = _cases(junit_xml(make_report()))

    error = cases["square"].find("error")
    assert error is not None and error.get("message") == "boom"


def test_findings_without_a_known_check_go_to_a_findings_case() -> None:
    report = Report.new("scan")
    report.add(Finding(rule="MLW-SCN-001", title="pickle runs code", severity=Severity.CRITICAL))

    cases = _cases(junit_xml(report))
    assert list(cases) == ["findings"]
    failure = cases["findings"].find("failure")
    assert failure is not None and "pickle runs code" in failure.get("message", "")


def test_failure_text_names_atlas_techniques(make_report: Callable[..., Report]) -> None:
    cases = _cases(junit_xml(make_report()))

    text = next(cases["pgd"].iter("failure")).text or ""
    assert "AML.T0043.000 Craft Adversarial Data: White-Box Optimization" in text
    assert "Recommendation: Fix it (MLW-EVA-001)." in text


def test_records_sharing_a_name_are_one_case_and_failures_are_not_repeated() -> None:
    report = Report.new("demo")
    with report.timed("threats"):
        pass
    with report.timed("threats"):
        pass
    report.add(Finding(rule="MLW-THR-001", title="t", severity=Severity.HIGH, check="threats"))

    root = ET.fromstring(junit_xml(report))
    assert [c.get("name") for c in root.iter("testcase")] == ["threats"]
    assert len(list(root.iter("failure"))) == 1


def test_a_finding_from_a_sub_check_goes_to_its_parent_case() -> None:
    report = Report.new("demo")
    with report.timed("evasion"):
        pass
    report.add(
        Finding(rule="MLW-EVA-001", title="t", severity=Severity.HIGH, check="evasion.evaluate")
    )

    cases = _cases(junit_xml(report))
    assert list(cases) == ["evasion"]
    assert cases["evasion"].find("failure") is not None


@settings(max_examples=60, deadline=None)
@given(title=st.text(min_size=1, max_size=50), check=st.text(max_size=20))
def test_any_text_gives_well_formed_xml(title: str, check: str) -> None:
    report = Report.new("scan")
    report.add(
        Finding(rule="MLW-SCN-001", title=title, severity=Severity.HIGH, check=check or None)
    )

    root = ET.fromstring(junit_xml(report))
    assert len(list(root.iter("failure"))) == 1
