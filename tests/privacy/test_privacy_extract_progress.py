"""Extraction shows each strategy and budget with the time left on a terminal, and
nothing elsewhere (issue 16: long work shows progress)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from mlwarden.core import console
from mlwarden.core.data import bundled
from mlwarden.privacy import extract_report


@pytest.fixture(scope="module")
def victim():
    from sklearn.linear_model import LogisticRegression

    ds = bundled("breast-cancer")
    model = LogisticRegression(max_iter=500).fit(ds.x[:300], ds.y[:300])
    return model, ds.subset(np.arange(300, len(ds)))


def test_terminal_shows_strategy_budget_and_time_left(victim, monkeypatch) -> None:
    model, pool = victim
    screen = io.StringIO()
    monkeypatch.setattr(console, "progress_enabled", lambda: True)
    monkeypatch.setattr(
        console, "err", Console(file=screen, force_terminal=True, width=160, color_system=None)
    )
    report = extract_report(model, pool, budgets=(40, 80), strategies=("pool", "random"))
    shown = screen.getvalue()
    assert "left" in shown and "pool @ 40 queries" in shown and "random @" in shown
    assert set(report.metrics["fidelity"]) == {"40", "80"}


def test_no_progress_without_a_terminal(victim, capsys) -> None:
    model, pool = victim
    assert not console.progress_enabled()  # pytest's stderr is not a TTY
    extract_report(model, pool, budgets=(40,))
    out = capsys.readouterr()
    assert "left" not in out.err and "\x1b[" not in out.err
