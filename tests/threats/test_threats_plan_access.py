"""``threats --plan``: the checks it writes run at the access the system declares."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlwarden.audit.jobs import build_jobs
from mlwarden.audit.plan import load_plan

SCORE_ATTACKS = {"lira", "rmia", "loss", "shadow"}


def _plan(cli, tmp_path: Path, visibility: str, outputs: str) -> dict:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(cli("threats", "--example", cwd=tmp_path).stdout)
    raw["model"]["visibility"] = visibility
    raw["deployment"]["outputs"] = outputs
    (tmp_path / "system.yaml").write_text(yaml.safe_dump(raw))
    res = cli("threats", "system.yaml", "--plan", "plan.yaml", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return {c["check"]: c for c in yaml.safe_load((tmp_path / "plan.yaml").read_text())["checks"]}


def test_labels_only_black_box_plans_no_score_or_gradient_attack(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    checks = _plan(cli, tmp_path, "black-box", "labels")
    for kind in ("evasion", "privacy", "extract"):
        assert checks[kind]["access"] == "label", kind
    assert checks["privacy"]["attack"] == "label-only"
    assert checks["privacy"]["attack"] not in SCORE_ATTACKS


@pytest.mark.parametrize("outputs", ["scores", "top-k"])
def test_black_box_with_scores_plans_score_access_never_white(cli, tmp_path: Path, outputs) -> None:  # type: ignore[no-untyped-def]
    checks = _plan(cli, tmp_path, "black-box", outputs)
    for kind in ("evasion", "privacy", "extract"):
        assert checks[kind]["access"] == "score", kind
    assert checks["privacy"]["attack"] == "lira"


def test_white_box_plans_full_access(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    checks = _plan(cli, tmp_path, "white-box", "labels")
    assert "access" not in checks["evasion"]  # everything the model allows: gradients


def test_planned_access_reaches_the_jobs(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _plan(cli, tmp_path, "black-box", "labels")
    text = (tmp_path / "plan.yaml").read_text()
    assert "access" in text.split("checks:")[0]  # the header says what access means
    for rel in ("models/classifier.pt", "data/train.npz", "data/holdout.npz", "gateway.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    plan = load_plan(tmp_path / "plan.yaml")
    plan.checks = [c for c in plan.checks if c.check in ("evasion", "privacy", "extract")]
    jobs = {j.kind: j for j in build_jobs(plan)}
    assert jobs["privacy"].kwargs["access"] == "label"
    assert jobs["extract"].kwargs["access"] == "label"
    assert jobs["evasion"].kwargs["access"] == "label"
