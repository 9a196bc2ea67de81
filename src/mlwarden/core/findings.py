"""Findings and reports: what every check produces.

A :class:`Finding` is one thing a user should know about, with a stable rule id
(``MLW-<AREA>-<NNN>``), a severity, the MITRE ATLAS technique and mitigation ids it
maps to, the evidence behind it, and one concrete recommendation.

A :class:`Report` collects the findings, metrics, seeds, timings and environment of
one run. The report renderers in :mod:`mlwarden.report` turn it into JSON, HTML,
SARIF or JUnit; they never compute anything themselves.

Example::

    report = Report.new(command="scan")
    report.add(Finding(rule="MLW-SCN-001", title="Pickle calls os.system",
                       severity=Severity.CRITICAL, atlas=["AML.T0011.000"],
                       mitigations=["AML.M0016"], recommendation="Do not load it."))
"""

from __future__ import annotations

import platform
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from mlwarden import __version__
from mlwarden.core.severity import Severity

SCHEMA_VERSION = "1.0"
RULE_ID = re.compile(r"^MLW-[A-Z]{2,5}-\d{3}$")


class Finding(BaseModel):
    """One result a user should act on (or know about)."""

    rule: str = Field(description="Stable rule id, MLW-<AREA>-<NNN>.")
    title: str
    severity: Severity
    atlas: list[str] = Field(default_factory=list, description="ATLAS technique/tactic ids.")
    mitigations: list[str] = Field(default_factory=list, description="ATLAS mitigation ids.")
    description: str = ""
    recommendation: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    artifact: str | None = Field(default=None, description="File, model or dataset concerned.")
    check: str | None = Field(default=None, description="The check that produced it.")
    owasp: list[str] = Field(default_factory=list, description="OWASP ML Top 10 ids (ML01..).")
    case_studies: list[dict[str, Any]] = Field(
        default_factory=list,
        description=(
            "Real-world attacks that used the same ATLAS techniques (MITRE ATLAS case "
            'studies): {"id", "name", "url", "aiid"?: [AI Incident Database links]}. '
            "Filled from 'atlas' when not given."
        ),
    )

    @model_validator(mode="after")
    def _with_case_studies(self) -> Finding:
        if not self.case_studies and self.atlas:
            from mlwarden.core.atlas import case_studies_for

            self.case_studies = [c.as_dict() for c in case_studies_for(self.atlas)]
        return self

    @field_validator("rule")
    @classmethod
    def _rule_id(cls, value: str) -> str:
        if not RULE_ID.match(value):
            raise ValueError(f"rule id {value!r} is not of the form MLW-<AREA>-<NNN>")
        return value

    @field_validator("atlas", "mitigations")
    @classmethod
    def _catalogued(cls, value: list[str]) -> list[str]:
        from mlwarden.core.atlas import unknown_ids

        bad = unknown_ids(value)
        if bad:
            raise ValueError(
                f"ATLAS ids not in mlwarden's catalogue (core/atlas.yaml): {', '.join(bad)}"
            )
        return value


class CheckRecord(BaseModel):
    """One check that ran (a JUnit test case; a SARIF run's tool component)."""

    name: str
    status: str = Field(default="ok", description="ok | error | skipped")
    seconds: float = 0.0
    message: str = ""


class Report(BaseModel):
    """Everything one run of mlwarden found, in a form every renderer accepts."""

    schema_version: str = SCHEMA_VERSION
    tool: dict[str, Any] = Field(default_factory=dict)
    command: str = ""
    created: str = ""
    target: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    seeds: dict[str, int] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    findings: list[Finding] = Field(default_factory=list)
    checks: list[CheckRecord] = Field(default_factory=list)
    artifacts: dict[str, Any] = Field(
        default_factory=dict, description="Extra structured output (e.g. scan files)."
    )
    suspicious: list[dict[str, Any]] | None = Field(
        default=None,
        description=(
            "Ranked suspicious training samples (mlwarden data): "
            '{"index": int, "score": float, "reasons": [str, ...]}, most suspicious first.'
        ),
    )
    images: dict[str, str] = Field(
        default_factory=dict,
        description="Named images as data: URIs (PNG, base64) shown in the HTML report.",
    )

    @classmethod
    def new(cls, command: str, seed: int | None = None) -> Report:
        report = cls(command=command, tool=tool_info(), created=_now())
        if seed is not None:
            report.seeds["global"] = seed
        return report

    def add(self, *findings: Finding) -> None:
        self.findings.extend(findings)

    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def at_or_above(self, threshold: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity >= threshold]

    def severity_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in reversed(list(Severity))}
        for f in self.findings:
            counts[f.severity.value] += 1
        return counts

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time a block into ``timings[name]`` (seconds) and record it as a check."""
        start = time.perf_counter()
        status, message = "ok", ""
        try:
            yield
        except Exception as exc:
            status, message = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            seconds = time.perf_counter() - start
            self.timings[name] = round(seconds, 4)
            self.checks.append(
                CheckRecord(name=name, status=status, seconds=seconds, message=message)
            )

    def merge(self, other: Report, prefix: str | None = None) -> None:
        """Fold another report's findings, metrics, timings and checks into this one."""
        self.findings.extend(other.findings)
        self.checks.extend(other.checks)
        for key, value in other.metrics.items():
            self.metrics[f"{prefix}.{key}" if prefix else key] = value
        for key, value in other.timings.items():
            self.timings[f"{prefix}.{key}" if prefix else key] = value
        self.images.update(other.images)
        if other.suspicious is not None and self.suspicious is None:
            self.suspicious = other.suspicious
        for key, value in other.artifacts.items():
            self.artifacts[f"{prefix}.{key}" if prefix else key] = value
        self.seeds.update(other.seeds)


def tool_info() -> dict[str, Any]:
    """Tool version and environment, recorded in every report."""
    info: dict[str, Any] = {
        "name": "mlwarden",
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for mod in ("numpy", "torch", "sklearn"):
        m = sys.modules.get(mod)
        if m is not None:
            info[mod] = getattr(m, "__version__", "unknown")
    return info


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def change_text(before: float, after: float, *, prefix: str = "") -> str:
    """How a rate moved, as a title says it, never "from 100.0% to 100.0%".

    ``prefix`` qualifies the new figure (e.g. ``"at most "`` for an upper bound).

    Example::

        change_text(0.97, 0.12)      # 'falls from 97.0% to 12.0%'
        change_text(1.0, 0.9996)     # 'is unchanged at 100.0%'
    """
    a, b = f"{before:.1%}", f"{after:.1%}"
    if a == b:
        return f"is unchanged at {a}" + (f" ({prefix.strip()})" if prefix.strip() else "")
    return f"{'falls' if after < before else 'rises'} from {a} to {prefix}{b}"
