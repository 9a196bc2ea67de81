"""The SARIF rule texts shipped in the package match the finding catalogue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.sarif import to_sarif

ROOT = Path(__file__).resolve().parents[2]


def test_rules_json_is_generated_from_docs_findings() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_rules.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_sarif_rule_descriptor_does_not_carry_the_figures_of_one_run() -> None:
    def sarif_rule(callers: int) -> dict[str, object]:
        report = Report.new(command="gateway")
        report.add(
            Finding(
                rule="MLW-GW-002",
                title=f"{callers} caller(s) have no rate limit",
                severity=Severity.HIGH,
                recommendation=f"limit the {callers} callers",
            )
        )
        return json.loads(to_sarif(report))["runs"][0]["tool"]["driver"]["rules"][0]

    one, five = sarif_rule(1), sarif_rule(5)
    assert one == five
    assert "1" not in str(one["shortDescription"])
