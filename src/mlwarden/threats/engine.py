"""Decide which threats apply to a system, how likely and harmful each is, and why.

The judgement follows the usual qualitative risk matrix (OWASP Risk Rating
Methodology; NIST SP 800-30 Rev. 1, Appendix I): likelihood and impact each on
low / medium / high, combined into a severity. Every level carries the reasons that
set it, so a reader sees what in the system description drove the result.

Example::

    threats = assess(load_system(Path("system.yaml")))
    report = threats_report(system)   # one Finding per threat, MLW-THR-NNN
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlwarden.core import atlas
from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.threats.rules import LEVELS, Judgement, Rule, RuleSet, builtin_rules, matches
from mlwarden.threats.schema import SystemDescription, load_system

#: likelihood rank + impact rank (0..4) -> severity, as in the OWASP risk matrix
#: (high x high = critical, high x medium = high, medium x medium = medium, ...).
_SEVERITY = {
    0: Severity.INFO,
    1: Severity.LOW,
    2: Severity.MEDIUM,
    3: Severity.HIGH,
    4: Severity.CRITICAL,
}


@dataclass
class Threat:
    """One threat that applies to the system, with the reasoning behind its rating."""

    rule: Rule
    likelihood: str
    likelihood_reasons: list[str]
    impact: str
    impact_reasons: list[str]
    severity: Severity
    tactics: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.rule.id

    def to_finding(self, advisory: bool = False) -> Finding:
        """The threat as a finding; ``advisory`` keeps the rating in evidence at info level."""
        r = self.rule
        names = ", ".join(f"{t} {atlas.get(t).full_name}" for t in r.techniques)
        description = (
            f"ATLAS: {names}. Likelihood {self.likelihood}: {'; '.join(self.likelihood_reasons)}. "
            f"Impact {self.impact}: {'; '.join(self.impact_reasons)}."
        )
        if advisory:
            description = f"Rated {self.severity.value} as a threat. {description}"
        return Finding(
            rule=r.id,
            title=r.title,
            severity=Severity.INFO if advisory else self.severity,
            atlas=[*r.techniques, *self.tactics],
            mitigations=list(r.mitigations),
            description=description,
            recommendation=r.recommendation,
            evidence={
                "techniques": list(r.techniques),
                "tactics": list(self.tactics),
                "likelihood": self.likelihood,
                "likelihood_reasons": list(self.likelihood_reasons),
                "impact": self.impact,
                "impact_reasons": list(self.impact_reasons),
                "checks": list(r.checks),
                "rated_severity": self.severity.value,
            },
            check="threats",
            owasp=list(r.owasp),
        )


def judge(judgement: Judgement, facts: dict[str, object]) -> tuple[str, list[str]]:
    """Apply a rule's base level and adjustments; the level and the reasons that set it."""
    level = LEVELS.index(judgement.base)
    reasons = [judgement.reason.rstrip(".")]
    for adj in judgement.adjust:
        if matches(adj.when, facts):
            level += adj.by
            sign = "raised" if adj.by > 0 else "lowered"
            reasons.append(f"{sign} because {adj.reason}")
    level = max(0, min(len(LEVELS) - 1, level))
    return LEVELS[level], reasons


def assess(system: SystemDescription, rules: RuleSet | None = None) -> list[Threat]:
    """The threats whose conditions hold for ``system``, most severe first."""
    facts = system.facts()
    ruleset = rules or builtin_rules()
    threats = []
    for rule in ruleset.rules:
        if not matches(rule.when, facts):
            continue
        likelihood, l_reasons = judge(rule.likelihood, facts)
        impact, i_reasons = judge(rule.impact, facts)
        severity = _SEVERITY[LEVELS.index(likelihood) + LEVELS.index(impact)]
        threats.append(
            Threat(rule, likelihood, l_reasons, impact, i_reasons, severity, rule.tactics)
        )
    threats.sort(key=lambda t: (-t.severity.rank, t.id))
    return threats


def threats_report(
    system: SystemDescription | Path | str,
    rules: RuleSet | None = None,
    seed: int = 0,
    advisory: bool = False,
) -> Report:
    """The threat model of ``system`` as a Report: one finding per applicable threat.

    ``advisory=True`` (what an audit plan's ``threats`` check uses by default) reports
    each threat at info severity with its rating in ``evidence.rated_severity``: a
    threat is a possibility, and the audit's measuring checks decide what fails a
    build. ``seed`` is accepted for the common check signature; the assessment is
    deterministic.
    """
    if not isinstance(system, SystemDescription):
        path = Path(system)
        system = load_system(path)
        source = str(path)
    else:
        source = "<in memory>"
    report = Report.new(command="threats", seed=seed)
    with report.timed("threats"):
        threats = assess(system, rules)
    report.target = {"name": system.name, "description": system.description, "source": source}
    report.config = {"system": system.model_dump(mode="json")}
    report.add(*(t.to_finding(advisory) for t in threats))
    report.metrics["count"] = len(threats)
    report.metrics["checks"] = sorted({c for t in threats for c in t.rule.checks})
    return report
