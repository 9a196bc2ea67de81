"""SARIF 2.1.0 rendering, for code-scanning dashboards (GitHub, Azure DevOps, ...).

One run whose ``tool.driver`` lists a rule for every rule id that has findings;
one result per finding with ``ruleId``, a ``level`` mapped from the severity, a
``security-severity`` score (GitHub's convention), a file location (the finding's
``artifact`` when it is a file path, else the model or data file the report
examined: code-scanning services refuse results without one), ``partialFingerprints``
so repeated runs do not duplicate alerts, and the MITRE ATLAS ids as result
properties, tags and references into an ``ATLAS`` taxonomy carried by the run.

Spec: "Static Analysis Results Interchange Format (SARIF) Version 2.1.0", OASIS
Standard, 27 March 2020. The tests validate every log against the official schema.

Example::

    write_sarif(report, "mlwarden.sarif")
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlwarden.core import atlas
from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.json_report import plain

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
ATLAS_TAXONOMY = "MITRE ATLAS"

#: SARIF ``level`` for each severity (SARIF has only error / warning / note / none).
LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
#: GitHub code scanning reads ``properties.security-severity`` (0-10, CVSS-like bands).
SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}


def sarif_log(report: Report) -> dict[str, Any]:
    """The report as a SARIF 2.1.0 log (a dict ready for ``json.dumps``)."""
    rules, rule_index = _rules(report.findings)
    cited = sorted({i for f in report.findings for i in (*f.atlas, *f.mitigations)})
    cited = [i for i in cited if atlas.is_known(i)]
    taxon_index = {ident: n for n, ident in enumerate(cited)}
    fallback = _fallback_uri(report)
    results = [_result(f, rule_index[f.rule], taxon_index, fallback) for f in report.findings]
    failed_checks = [c for c in report.checks if c.status == "error"]
    invocation: dict[str, Any] = {
        "executionSuccessful": not failed_checks,
        "toolExecutionNotifications": [
            {
                "level": "error",
                "message": {"text": f"check {c.name!r} failed: {c.message or 'no message'}"},
                "descriptor": {"id": f"check/{c.name}"},
            }
            for c in failed_checks
        ],
    }
    if report.created:
        invocation["endTimeUtc"] = report.created
    driver: dict[str, Any] = {
        "name": "mlwarden",
        "version": str(report.tool.get("version", "unknown")),
        "rules": rules,
        "supportedTaxonomies": [{"name": ATLAS_TAXONOMY, "index": 0}],
    }
    if _is_semver(driver["version"]):
        driver["semanticVersion"] = driver["version"]
    run: dict[str, Any] = {
        "tool": {"driver": driver},
        "invocations": [invocation],
        "results": results,
        "taxonomies": [_taxonomy(cited)],
        "columnKind": "unicodeCodePoints",
        "properties": plain(
            {
                "command": report.command,
                "schema_version": report.schema_version,
                "seeds": report.seeds,
                "metrics": report.metrics,
                "target": report.target,
                "data": report.data,
            }
        ),
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def to_sarif(report: Report) -> str:
    return json.dumps(sarif_log(report), indent=2, allow_nan=False)


def write_sarif(report: Report, path: str | Path) -> None:
    """Write the SARIF log atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_sarif(report), encoding="utf-8")
    tmp.replace(path)


def _rules(findings: list[Finding]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One reporting descriptor per rule id, described by its most severe finding."""
    by_rule: dict[str, list[Finding]] = {}
    for f in findings:
        by_rule.setdefault(f.rule, []).append(f)
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for rule_id in sorted(by_rule):
        group = by_rule[rule_id]
        lead = max(group, key=lambda f: f.severity.rank)
        atlas_ids = sorted({i for f in group for i in f.atlas})
        mitigation_ids = sorted({i for f in group for i in f.mitigations})
        descriptor: dict[str, Any] = {
            "id": rule_id,
            "name": _pascal(lead.title),
            "shortDescription": {"text": lead.title},
            "fullDescription": {"text": lead.description or lead.title},
            "defaultConfiguration": {"level": LEVELS[lead.severity]},
            "properties": {
                "tags": ["security", "machine-learning", *atlas_ids],
                "security-severity": SECURITY_SEVERITY[lead.severity],
                "atlas": atlas_ids,
                "atlas_mitigations": mitigation_ids,
            },
        }
        if lead.recommendation:
            descriptor["help"] = {"text": lead.recommendation}
        index[rule_id] = len(rules)
        rules.append(descriptor)
    return rules, index


def _result(
    f: Finding, rule_index: int, taxon_index: dict[str, int], fallback: str | None
) -> dict[str, Any]:
    text = f.title if not f.description else f"{f.title}. {f.description}"
    if f.recommendation:
        text = f"{text} Recommendation: {f.recommendation}"
    result: dict[str, Any] = {
        "ruleId": f.rule,
        "ruleIndex": rule_index,
        "level": LEVELS[f.severity],
        "kind": "fail",
        "message": {"text": text},
        "partialFingerprints": {"mlwardenFinding/v1": _fingerprint(f)},
        "properties": plain(
            {
                "severity": f.severity.value,
                "security-severity": SECURITY_SEVERITY[f.severity],
                "atlas": f.atlas,
                "atlas_mitigations": f.mitigations,
                "owasp": f.owasp,
                "check": f.check,
                "artifact": f.artifact,
                "evidence": f.evidence,
                "tags": sorted({*f.atlas, *f.mitigations}),
            }
        ),
    }
    taxa = [
        {"id": i, "index": taxon_index[i], "toolComponent": {"name": ATLAS_TAXONOMY, "index": 0}}
        for i in dict.fromkeys((*f.atlas, *f.mitigations))
        if i in taxon_index
    ]
    if taxa:
        result["taxa"] = taxa
    uri = _artifact_uri(f.artifact) or fallback
    if uri is not None:
        result["locations"] = [{"physicalLocation": {"artifactLocation": {"uri": uri}}}]
    return result


def _fallback_uri(report: Report) -> str | None:
    """Where a finding with no file of its own points: the model, else the data examined.

    Code-scanning services (GitHub's among them) refuse results without a location,
    and a finding about a model's behaviour belongs to the model file.
    """
    for section in (report.target, report.data):
        value = section.get("path")
        if isinstance(value, str) and (uri := _artifact_uri(value)) is not None:
            return uri
    return None


def _taxonomy(ids: list[str]) -> dict[str, Any]:
    taxa = []
    for ident in ids:
        entry = atlas.get(ident)
        taxa.append(
            {
                "id": ident,
                "name": entry.full_name,
                "shortDescription": {"text": entry.description},
                "helpUri": entry.url,
                "properties": {"kind": entry.kind},
            }
        )
    release = _atlas_release()
    component: dict[str, Any] = {
        "name": ATLAS_TAXONOMY,
        "organization": "MITRE",
        "informationUri": "https://atlas.mitre.org/",
        "isComprehensive": False,
        "taxa": taxa,
        "shortDescription": {
            "text": "Adversarial Threat Landscape for Artificial-Intelligence Systems"
        },
    }
    if release:
        component["version"] = release
    return component


def _atlas_release() -> str:
    from importlib import resources

    import yaml

    text = resources.files("mlwarden.core").joinpath("atlas.yaml").read_text(encoding="utf-8")
    return str((yaml.safe_load(text) or {}).get("release", ""))


def _artifact_uri(artifact: str | None) -> str | None:
    """A relative (or ``file://``) URI when ``artifact`` names a file or folder, else None."""
    if not artifact or "://" in artifact or artifact.startswith(("data:", "mailto:")):
        return None
    path = Path(artifact)
    looks_like_path = path.exists() or os.sep in artifact or "/" in artifact or bool(path.suffix)
    if not looks_like_path:
        return None
    if path.is_absolute():
        try:
            rel = path.resolve().relative_to(Path.cwd().resolve())
        except (ValueError, OSError):
            return path.as_uri()
        return quote(rel.as_posix())
    return quote(path.as_posix())


def _fingerprint(f: Finding) -> str:
    key = "\x1f".join([f.rule, f.artifact or "", f.check or "", f.title])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _pascal(title: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in title).split()
    return "".join(w[:1].upper() + w[1:] for w in words)[:80] or "Finding"


def _is_semver(version: str) -> bool:
    import re

    return bool(re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", version))
