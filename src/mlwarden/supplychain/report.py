"""Turn a :class:`~mlwarden.supplychain.results.ScanResult` into a mlwarden Report.

Every issue becomes a :class:`~mlwarden.core.findings.Finding` (rule MLW-SCN-*,
ATLAS AML.T0010.003 AI Supply Chain Compromise: Model and AML.T0011.000 Unsafe AI
Artifacts; mitigations AML.M0016 Vulnerability Scanning and AML.M0014 Verify AI
Artifacts). The scan's own JSON document sits in ``report.artifacts["scan"]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mlwarden.core.findings import Finding, Report
from mlwarden.supplychain.policy import Policy
from mlwarden.supplychain.results import RULES, ScanResult, printable
from mlwarden.supplychain.scanner import scan_paths

ATLAS = ["AML.T0010.003", "AML.T0011.000"]
MITIGATIONS = ["AML.M0016", "AML.M0014"]


def to_report(result: ScanResult, report: Report | None = None) -> Report:
    """Add the scan's findings, metrics and JSON document to ``report`` (or a new one)."""
    report = report or Report.new(command="scan")
    for f in result.files:
        path = printable(f.path)  # every renderer writes UTF-8
        verdict = f.verdict.value  # once per file: it is the worst of all its findings
        for issue in f.findings:
            title, recommendation = RULES[issue.rule]
            shown = issue.to_dict()
            report.add(
                Finding(
                    rule=issue.rule,
                    title=f"{title}: {Path(path).name}",
                    severity=issue.severity,
                    atlas=ATLAS,
                    mitigations=MITIGATIONS,
                    description=shown["message"],
                    recommendation=recommendation,
                    evidence={
                        "format": f.format,
                        "verdict": verdict,
                        "global": shown["global"],
                        "offset": issue.offset,
                        "member": shown["member"],
                        "occurrences": issue.count,
                    },
                    artifact=path,
                    check="scan",
                    owasp=["ML06"],
                )
            )
    counts = result.verdicts()
    report.metrics.update({f"files_{k}": v for k, v in counts.items()})
    report.metrics["files"] = len(result.files)
    report.metrics["exit_code"] = result.exit_code()
    report.timings["scan"] = round(sum(f.seconds for f in result.files), 4)
    report.artifacts["scan"] = result.to_dict()
    report.config["scan_policy"] = {"allow": result.policy.allow, "deny": result.policy.deny}
    return report


def scan_report(
    paths: Iterable[str | Path],
    allow: Iterable[str] = (),
    policy: Policy | None = None,
    seed: int = 0,
) -> Report:
    """Scan files/directories and return the Report (see :func:`scan_paths`)."""
    report = Report.new(command="scan", seed=seed)
    with report.timed("scan"):
        result = scan_paths(paths, policy, allow=allow)
    return to_report(result, report)
