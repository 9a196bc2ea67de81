"""Compare an audit with a previous one: CI fails only on regressions.

A regression is either

* a metric worse than in the baseline by more than its tolerance (the direction,
  ``higher`` or ``lower`` is better, and the tolerance come from the plan's
  ``baseline.metrics`` globs first, then from :data:`DEFAULT_RULES`; metrics that
  match no rule are not compared), or
* a new finding: one whose (rule, artefact, audit job) occurs more often now than in
  the baseline.

Findings already present in the baseline are kept in the report, marked
``evidence.baseline = "unchanged"``; new ones are marked ``"new"``. Each metric
regression becomes a finding ``MLW-AUD-002``.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlwarden.audit.plan import MetricRule
from mlwarden.core.errors import InputFileError
from mlwarden.core.findings import Finding, Report, Severity

#: (glob over metric names, rule): first match wins. Attack success and leakage
#: should go down; accuracy under attack should stay up.
DEFAULT_RULES: tuple[tuple[str, MetricRule], ...] = (
    ("*robust_accuracy*", MetricRule(direction="higher", tolerance=0.02)),
    ("*attack_success*", MetricRule(direction="lower", tolerance=0.02)),
    ("*success_rate*", MetricRule(direction="lower", tolerance=0.02)),
    ("*auc*", MetricRule(direction="lower", tolerance=0.02)),
    ("*advantage*", MetricRule(direction="lower", tolerance=0.02)),
    ("*tpr*", MetricRule(direction="lower", tolerance=0.01)),
    ("*agreement*", MetricRule(direction="lower", tolerance=0.02)),
    ("*fidelity*", MetricRule(direction="lower", tolerance=0.02)),
    ("*leak*", MetricRule(direction="lower", tolerance=0.02)),
    ("*clean_accuracy*", MetricRule(direction="higher", tolerance=0.02)),
    ("*accuracy*", MetricRule(direction="higher", tolerance=0.02)),
)


@dataclass
class Regression:
    metric: str
    baseline: float
    current: float
    rule: MetricRule

    def to_finding(self) -> Finding:
        better = f"{self.rule.direction} is better"
        return Finding(
            rule="MLW-AUD-002",
            title=f"{self.metric} regressed: {self.baseline:.4g} -> {self.current:.4g}",
            severity=Severity.HIGH,
            description=(
                f"The metric moved the wrong way ({better}) by "
                f"{abs(self.current - self.baseline):.4g}, more than its tolerance "
                f"{self.rule.tolerance:g}."
            ),
            recommendation=(
                "Find the change since the baseline that weakened the model or pipeline; "
                "if the change is intended, refresh the baseline report."
            ),
            evidence={
                "metric": self.metric,
                "baseline_value": self.baseline,
                "current_value": self.current,
                "direction": self.rule.direction,
                "tolerance": self.rule.tolerance,
            },
            check="baseline",
        )


def load_baseline(path: Path) -> dict[str, Any]:
    """A previous JSON report (``--json``) as data; one-line errors if it is not one."""
    if not path.is_file():
        raise InputFileError(path, "no such file (expected a previous mlwarden --json report)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputFileError(path, f"not a JSON report ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise InputFileError(path, "not an mlwarden JSON report (no 'findings' list)")
    if not isinstance(data.get("metrics", {}), dict):
        raise InputFileError(path, "not an mlwarden JSON report ('metrics' is not a mapping)")
    return data


def rule_for(metric: str, custom: dict[str, MetricRule]) -> MetricRule | None:
    for pattern, rule in (*custom.items(), *DEFAULT_RULES):
        if fnmatch.fnmatchcase(metric, pattern):
            return rule
    return None


def metric_regressions(
    current: dict[str, Any], baseline: dict[str, Any], custom: dict[str, MetricRule]
) -> list[Regression]:
    """Metrics in both reports that got worse by more than their tolerance."""
    out = []
    for name in sorted(set(current) & set(baseline)):
        now, before = _number(current[name]), _number(baseline[name])
        if now is None or before is None:
            continue
        rule = rule_for(name, custom)
        if rule is None:
            continue
        worse = (before - now) if rule.direction == "higher" else (now - before)
        if worse > rule.tolerance + 1e-12:
            out.append(Regression(name, before, now, rule))
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def finding_key(rule: str, artifact: Any, job: Any) -> tuple[str, str, str]:
    return (str(rule), str(artifact or ""), str(job or ""))


def mark_new_findings(report: Report, baseline: dict[str, Any]) -> list[Finding]:
    """Mark each finding new or unchanged against the baseline; return the new ones."""
    before: Counter[tuple[str, str, str]] = Counter()
    for f in baseline["findings"]:
        if isinstance(f, dict):
            raw = f.get("evidence")
            evidence: dict[str, Any] = raw if isinstance(raw, dict) else {}
            before[
                finding_key(f.get("rule", ""), f.get("artifact"), evidence.get("audit_job"))
            ] += 1
    new = []
    for f in report.findings:
        key = finding_key(f.rule, f.artifact, f.evidence.get("audit_job"))
        if before[key] > 0:
            before[key] -= 1
            f.evidence["baseline"] = "unchanged"
        else:
            f.evidence["baseline"] = "new"
            new.append(f)
    return new


def apply_baseline(
    report: Report,
    baseline: dict[str, Any],
    custom: dict[str, MetricRule],
    threshold: Severity | None = None,
) -> list[Finding]:
    """Add metric-regression findings to ``report``; return every regression finding.

    The result is what should fail the build: metric regressions, plus the new
    findings at or above ``threshold`` (every new finding when ``threshold`` is None).
    """
    new = mark_new_findings(report, baseline)
    regressions = [
        r.to_finding()
        for r in metric_regressions(report.metrics, baseline.get("metrics", {}), custom)
    ]
    for f in regressions:
        f.evidence["baseline"] = "new"
    report.add(*regressions)
    failing = [f for f in new if threshold is None or f.severity >= threshold]
    report.metrics["baseline.new_findings"] = len(new)
    report.metrics["baseline.metric_regressions"] = len(regressions)
    return [*failing, *regressions]
