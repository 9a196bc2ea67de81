"""JUnit XML rendering, for CI systems that show test results (Jenkins, GitLab, ...).

One ``<testsuite>`` per report, one ``<testcase>`` per check in ``report.checks``
(records sharing a name are one case), and one ``<failure>`` for each finding at or
above the ``fail_on`` severity, attached to the test case of the check that produced
it (``evasion.evaluate`` goes to ``evasion`` when only that ran), or to a ``findings``
test case when the finding names no check that ran. A check that crashed is an ``<error>``; one
that was skipped is ``<skipped>``. Findings below the threshold are listed in the
test case's ``<system-out>`` so nothing is hidden.

Example::

    write_junit(report, "mlwarden-junit.xml", fail_on=Severity.HIGH)
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from mlwarden.core import atlas
from mlwarden.core.findings import CheckRecord, Finding, Report, Severity
from mlwarden.report.json_report import plain

#: Characters XML 1.0 cannot hold, even escaped.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
FINDINGS_CASE = "findings"


def junit_xml(report: Report, fail_on: Severity = Severity.HIGH) -> str:
    """The report as a JUnit XML document (a string)."""
    suite_name = f"mlwarden.{report.command or 'report'}"
    checks = _merge_same_name(report.checks)
    names = [c.name for c in checks]
    owner = {id(f): _case_for(f.check, names) for f in report.findings}
    if (FINDINGS_CASE in owner.values() and FINDINGS_CASE not in names) or not checks:
        checks.append(CheckRecord(name=FINDINGS_CASE, seconds=0.0))

    cases: list[ET.Element] = []
    failures = errors = skipped = 0
    for check in checks:
        mine = [f for f in report.findings if owner[id(f)] == check.name]
        case = ET.Element(
            "testcase",
            {
                "classname": suite_name,
                "name": _text(check.name),
                "time": f"{max(check.seconds or 0.0, 0.0):.3f}",
            },
        )
        if check.status == "error":
            errors += 1
            err = ET.SubElement(
                case, "error", {"message": _text(check.message or "check failed"), "type": "error"}
            )
            err.text = _text(check.message)
        elif check.status == "skipped":
            skipped += 1
            ET.SubElement(case, "skipped", {"message": _text(check.message or "skipped")})
        failing = [f for f in mine if f.severity >= fail_on]
        if failing:
            failures += 1
        for f in sorted(failing, key=lambda f: -f.severity.rank):
            failure = ET.SubElement(
                case,
                "failure",
                {
                    "message": _text(f"[{f.severity.value}] {f.rule}: {f.title}"),
                    "type": f.rule,
                },
            )
            failure.text = _text(_details(f))
        below = [f for f in mine if f.severity < fail_on]
        if below:
            out = ET.SubElement(case, "system-out")
            out.text = _text("\n".join(f"[{f.severity.value}] {f.rule}: {f.title}" for f in below))
        cases.append(case)

    total_time = sum(max(c.seconds or 0.0, 0.0) for c in checks)
    attrs = {
        "name": suite_name,
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": f"{total_time:.3f}",
    }
    root = ET.Element("testsuites", {k: v for k, v in attrs.items() if k != "skipped"})
    suite = ET.SubElement(root, "testsuite", attrs)
    if report.created:
        suite.set("timestamp", report.created)
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("mlwarden.version", str(report.tool.get("version", ""))),
        ("fail_on", fail_on.value),
        *((f"seed.{k}", str(v)) for k, v in report.seeds.items()),
    ):
        ET.SubElement(props, "property", {"name": _text(key), "value": _text(value)})
    suite.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def write_junit(report: Report, path: str | Path, fail_on: Severity = Severity.HIGH) -> None:
    """Write the JUnit XML atomically."""
    from mlwarden.report.output import write_text

    write_text(path, junit_xml(report, fail_on=fail_on))


def _merge_same_name(checks: list[CheckRecord]) -> list[CheckRecord]:
    """One record per check name (a step and its sub-steps may record the same name)."""
    rank = {"ok": 0, "skipped": 1, "error": 2}
    merged: dict[str, CheckRecord] = {}
    for c in checks:
        if c.name not in merged:
            merged[c.name] = c.model_copy()
            continue
        m = merged[c.name]
        m.seconds = (m.seconds or 0.0) + (c.seconds or 0.0)
        if rank.get(c.status, 2) > rank.get(m.status, 2):
            m.status = c.status
        if c.message and c.message not in m.message:
            m.message = f"{m.message}; {c.message}" if m.message else c.message
    return list(merged.values())


def _case_for(check: str | None, names: list[str]) -> str:
    """The test case a finding belongs to: its check, or the check it is a part of
    (``evasion.evaluate`` belongs to ``evasion``), else the ``findings`` case."""
    if check in names:
        return check
    parents = [n for n in names if check and check.startswith(n + ".")]
    return max(parents, key=len) if parents else FINDINGS_CASE


def _details(f: Finding) -> str:
    lines = [f"{f.severity.value.upper()} {f.rule}: {f.title}"]
    if f.description:
        lines.append(f.description)
    if f.recommendation:
        lines.append(f"Recommendation: {f.recommendation}")
    if f.artifact:
        lines.append(f"Artifact: {f.artifact}")
    for label, ids in (("ATLAS techniques", f.atlas), ("ATLAS mitigations", f.mitigations)):
        if ids:
            named = [f"{i} {atlas.get(i).full_name}" if atlas.is_known(i) else i for i in ids]
            lines.append(f"{label}: {'; '.join(named)}")
    if f.evidence:
        lines.append("Evidence: " + json.dumps(plain(f.evidence), sort_keys=True)[:4000])
    return "\n".join(lines)


def _text(value: object) -> str:
    return _ILLEGAL_XML.sub("\ufffd", str(value))
