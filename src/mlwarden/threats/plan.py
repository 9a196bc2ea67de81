"""Write the audit plan that tests a system for its threats (``threats --plan PLAN.yaml``).

The plan has one check per mlwarden check that addresses at least one applicable
threat, each preceded by a comment naming the threats it covers, plus a ``threats``
check so the audit report carries the threat model too. Artefacts come from the
system description's optional ``artifacts`` section, rewritten relative to the plan's
folder; what is missing is written as ``CHANGE-ME`` for the user to fill in (the audit
then stops with a one-line error naming the field).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from mlwarden.threats.engine import Threat
from mlwarden.threats.rules import CHECKS
from mlwarden.threats.schema import Modality, Outputs, SystemDescription, Visibility

PLACEHOLDER = "CHANGE-ME"

#: L-inf budgets in input units: 8/255 for images in [0, 1] (Madry et al., arXiv
#: 1706.06083; RobustBench), 0.1 for standardised tabular features.
_EPS = {Modality.IMAGE: 0.0314, Modality.TABULAR: 0.1}


def planned_access(system: SystemDescription) -> str:
    """What the attacker sees, as the checks' ``access``: ``white`` for a white-box model;
    for a black-box one, ``label`` when the API returns labels only, else ``score``
    (top-k scores are planned as scores: the stronger attacker, so the figure fails
    closed)."""
    if system.model.visibility == Visibility.WHITE_BOX:
        return "white"
    return "label" if system.deployment.outputs == Outputs.LABELS else "score"


def _rel(path: str, system_dir: Path, plan_dir: Path) -> str:
    p = Path(path)
    if "://" in path or p.is_absolute():
        return path
    return os.path.relpath(system_dir / p, plan_dir)


def plan_dict(
    system: SystemDescription, threats: list[Threat], system_path: Path, plan_path: Path
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The plan as data, and for each check the threat ids it addresses."""
    sys_dir = system_path.resolve().parent
    plan_dir = plan_path.resolve().parent
    a = system.artifacts
    models = {n: _rel(p, sys_dir, plan_dir) for n, p in a.models.items()} or {
        "model": f"{PLACEHOLDER}/model.onnx"
    }
    datasets = {n: _rel(p, sys_dir, plan_dir) for n, p in a.datasets.items()}
    train = a.train or next(iter(datasets), None)
    holdout = a.holdout or (list(datasets)[1] if len(datasets) > 1 else None)
    if train is None:
        datasets["train"] = f"{PLACEHOLDER}/train.npz"
        train = "train"
    if holdout is None:
        datasets["holdout"] = f"{PLACEHOLDER}/holdout.npz"
        holdout = "holdout"
    model = next(iter(models))
    artifacts: dict[str, Any] = {"models": models, "datasets": datasets}
    if a.registry:
        artifacts["registry"] = _rel(a.registry, sys_dir, plan_dir)
    if a.gateway:
        artifacts["gateway"] = _rel(a.gateway, sys_dir, plan_dir)

    access = planned_access(system)
    # Checks run at the attacker's access, never above it: no gradient attack on a
    # black-box model, no score-based attack on a labels-only API.
    limited = {} if access == "white" else {"access": access}
    covers: dict[str, list[str]] = {}
    for t in threats:
        for check in t.rule.checks:
            covers.setdefault(check, []).append(t.id)
    entries: dict[str, dict[str, Any]] = {
        "scan": {"check": "scan", "paths": list(models)},
        "registry-verify": {
            "check": "registry-verify",
            "ref": a.registry_ref or f"{PLACEHOLDER}@1",
            **({} if a.registry else {"registry": f"{PLACEHOLDER}/registry"}),
        },
        "data": {"check": "data", "data": train},
        "evasion": {
            "check": "evasion",
            "models": [model],
            "data": holdout,
            "norm": "linf",
            "eps": _EPS.get(system.modality, 0.0314),
            **limited,
        },
        "privacy": {
            "check": "privacy",
            "model": model,
            "train": train,
            "holdout": holdout,
            "attack": "label-only" if access == "label" else "lira",
            "shadows": 16,
            **limited,
        },
        "extract": {
            "check": "extract",
            "model": model,
            "pool": holdout,
            "budgets": [100, 1000],
            **limited,
        },
        "backdoor": {"check": "backdoor", "model": model, "data": train},
        "gateway-config": {
            "check": "gateway-config",
            **({} if a.gateway else {"config": f"{PLACEHOLDER}/gateway.yaml"}),
        },
    }
    checks: list[dict[str, Any]] = [
        {"check": "threats", "system": os.path.relpath(system_path.resolve(), plan_dir)}
    ]
    checks += [entries[c] for c in CHECKS if c in covers]
    plan = {
        "version": 1,
        "name": system.name,
        "seed": 0,
        "artifacts": artifacts,
        "checks": checks,
    }
    return plan, covers


def render_plan(plan: dict[str, Any], covers: dict[str, list[str]], system_name: str) -> str:
    """YAML text with a header and a comment above each check naming its threats."""
    head = {k: v for k, v in plan.items() if k != "checks"}
    lines = [
        f"# Audit plan for {system_name}, written by `mlwarden threats --plan`.",
        "# Attacks run at the access the system description declares (model.visibility,",
        "# deployment.outputs): 'access: label' = labels only, 'score' = scores, none = all.",
        "# Run it: mlwarden audit THIS_FILE --html audit.html --fail-on high",
        "# Paths are relative to this file's folder; replace every CHANGE-ME.",
        yaml.safe_dump(head, sort_keys=False).rstrip(),
        "checks:",
    ]
    for entry in plan["checks"]:
        kind = entry["check"]
        why = (
            "the threat model itself, kept in the audit report"
            if kind == "threats"
            else "addresses " + ", ".join(covers.get(kind, []))
        )
        lines.append(f"  # {why}")
        body = yaml.safe_dump([entry], sort_keys=False, default_flow_style=False).rstrip()
        lines.extend("  " + line for line in body.splitlines())
    return "\n".join(lines) + "\n"


def write_plan(
    system: SystemDescription, threats: list[Threat], system_path: Path, plan_path: Path
) -> Path:
    plan, covers = plan_dict(system, threats, system_path, plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(render_plan(plan, covers, system.name), encoding="utf-8")
    return plan_path
