"""Evasion shows its phases and the time left on a terminal, and nothing elsewhere."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from mlwarden.core import console
from mlwarden.core.data import bundled
from mlwarden.evasion import evasion_report
from mlwarden.evasion.suite import Budget, phase_weights


@pytest.fixture(scope="module")
def tiny():
    from sklearn.linear_model import LogisticRegression

    ds = bundled("breast-cancer")
    sub = ds.subset(np.arange(0, len(ds), 40))
    return LogisticRegression(max_iter=500).fit(ds.x, ds.y), sub


def test_terminal_shows_phases_and_time_left(tiny, monkeypatch):
    model, sub = tiny
    screen = io.StringIO()
    monkeypatch.setattr(console, "progress_enabled", lambda: True)
    monkeypatch.setattr(
        console, "err", Console(file=screen, force_terminal=True, width=120, color_system=None)
    )
    evasion_report([model], sub, eps=0.1, budget="quick", limit=None)
    shown = screen.getvalue()
    assert "square" in shown and "left" in shown


def test_no_progress_without_a_terminal(tiny, capsys):
    model, sub = tiny
    assert not console.progress_enabled()  # pytest's stderr is not a TTY
    evasion_report([model], sub, eps=0.1, budget="quick", limit=None)
    out = capsys.readouterr()
    assert "left" not in out.err and "\x1b[" not in out.err and out.out == ""


def test_phase_weights_cover_every_phase_of_each_access_level():
    white = phase_weights(Budget.fast(), "white", 500)
    assert {"apgd-ce", "apgd-t", "deepfool", "square", "sanity checks", "curve"} <= set(white)
    assert white["fab-t"] == 0  # not run by the fast budget
    assert set(phase_weights(Budget.standard(), "label", 10)) == {"hopskipjump"}
    assert all(v >= 0 for v in phase_weights(Budget.standard(), "score", 10).values())


def test_the_command_line_default_is_the_fast_budget_and_says_so(tmp_path):
    import json

    import torch
    from typer.testing import CliRunner

    from mlwarden.cli.main import app
    from mlwarden.core.models import MLP

    torch.manual_seed(0)
    path = tmp_path / "mlp.pt"
    torch.jit.save(torch.jit.script(MLP(30, 2, hidden=(8,)).eval()), str(path))
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        app, ["evasion", str(path), "breast-cancer", "--limit", "12", "--json", str(out)]
    )
    assert res.exit_code in (0, 1), res.output
    report = json.loads(out.read_text())
    assert report["config"]["budget"] == "fast"
    main = next(f for f in report["findings"] if f["rule"] == "MLW-EVA-001")
    assert "lower bound on attack strength" in main["description"]
    assert "smoke test" not in main["title"]
    stages = {s["name"]: s for s in main["evidence"]["stages"]}
    assert stages["fab-t"]["skipped"] == "not in the fast budget"


def test_privacy_shadow_training_shows_time_left(monkeypatch):
    from sklearn.linear_model import LogisticRegression

    from mlwarden.privacy.shadows import SklearnRecipe, train_shadows

    screen = io.StringIO()
    monkeypatch.setattr(console, "progress_enabled", lambda: True)
    monkeypatch.setattr(
        console, "err", Console(file=screen, force_terminal=True, width=120, color_system=None)
    )
    ds = bundled("breast-cancer")
    out = train_shadows(SklearnRecipe(LogisticRegression()), ds.x[:80], ds.y[:80], n_models=4)
    assert out.logp.shape[0] == 4
    shown = screen.getvalue()
    assert "shadow models" in shown and "left" in shown
