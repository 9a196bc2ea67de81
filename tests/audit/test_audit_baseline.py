"""Baselines: CI fails only on worse metrics (beyond tolerance) or new findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlwarden.audit.baseline import apply_baseline, load_baseline, metric_regressions, rule_for
from mlwarden.audit.plan import MetricRule
from mlwarden.core.errors import InputFileError
from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.json_report import report_dict


def finding(
    rule: str = "MLW-EVA-001", job: str = "evasion", sev: Severity = Severity.HIGH
) -> Finding:
    return Finding(rule=rule, title="t", severity=sev, evidence={"audit_job": job}, artifact="m.pt")


def report(metrics: dict, *findings: Finding) -> Report:
    r = Report.new("audit")
    r.metrics.update(metrics)
    r.add(*findings)
    return r


def test_worse_beyond_tolerance_is_a_regression_either_direction() -> None:
    base = {"e.robust_accuracy": 0.60, "p.auc": 0.55}
    ok = {"e.robust_accuracy": 0.59, "p.auc": 0.56}
    bad = {"e.robust_accuracy": 0.50, "p.auc": 0.60}
    assert metric_regressions(ok, base, {}) == []
    assert {r.metric for r in metric_regressions(bad, base, {})} == {"e.robust_accuracy", "p.auc"}


def test_improvements_and_unknown_metrics_never_fail() -> None:
    base = {"e.robust_accuracy": 0.5, "p.auc": 0.7, "x.seconds": 1.0, "e.note": "text"}
    now = {"e.robust_accuracy": 0.9, "p.auc": 0.5, "x.seconds": 50.0, "e.note": "other"}
    assert metric_regressions(now, base, {}) == []


def test_plan_rules_come_before_defaults() -> None:
    custom = {"e.robust_*": MetricRule(direction="lower", tolerance=0.0)}
    assert rule_for("e.robust_accuracy", custom).direction == "lower"
    assert rule_for("e.robust_accuracy", {}).direction == "higher"
    regs = metric_regressions({"e.robust_accuracy": 0.7}, {"e.robust_accuracy": 0.6}, custom)
    assert [r.metric for r in regs] == ["e.robust_accuracy"]


def test_only_new_findings_fail() -> None:
    base = report_dict(report({}, finding(), finding("MLW-SCN-001", "scan")))
    now = report({}, finding(), finding("MLW-SCN-001", "scan"))
    assert apply_baseline(now, base, {}) == []
    assert {f.evidence["baseline"] for f in now.findings} == {"unchanged"}
    now2 = report({}, finding(), finding(), finding("MLW-SCN-001", "scan"))
    failing = apply_baseline(now2, base, {})
    assert len(failing) == 1 and failing[0].rule == "MLW-EVA-001"


def test_new_findings_below_threshold_do_not_fail() -> None:
    base = report_dict(report({}))
    now = report({}, finding(sev=Severity.LOW))
    assert apply_baseline(now, base, {}, threshold=Severity.HIGH) == []
    assert apply_baseline(report({}, finding(sev=Severity.LOW)), base, {}) != []


def test_metric_regression_is_added_as_a_finding() -> None:
    base = report_dict(report({"e.robust_accuracy": 0.8}))
    now = report({"e.robust_accuracy": 0.3})
    (f,) = apply_baseline(now, base, {})
    assert f.rule == "MLW-AUD-002" and f in now.findings
    assert f.evidence["baseline_value"] == 0.8 and f.evidence["current_value"] == 0.3


@pytest.mark.parametrize(
    "text", ["{not json", "[]", '{"findings": 3}', '{"findings": [], "metrics": 1}']
)
def test_bad_baseline_file_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(InputFileError):
        load_baseline(path)


def test_baseline_round_trips_a_written_report(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(report_dict(report({"a.auc": 0.5}, finding()))))
    assert load_baseline(path)["metrics"] == {"a.auc": 0.5}
