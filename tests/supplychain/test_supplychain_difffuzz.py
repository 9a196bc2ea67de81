"""A short, seeded differential-fuzzing run (the long one is ``benchmarks/scan_fuzz.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from difffuzz import build_seeds, run

pytest.importorskip("joblib")
pytest.importorskip("torch")


def test_no_mutant_runs_code_while_scanned_safe(tmp_path: Path) -> None:
    seeds = build_seeds(tmp_path)
    report = run(seeds, mutants_per_seed=2, seed=20, workdir=tmp_path, seconds=1)
    assert report.bypasses == []
    # the oracle is live: every loader was exercised and most mutants still run their canary
    assert set(report.tried) == {"pickle", "joblib", "numpy", "torch"}
    assert sum(report.fired.values()) >= sum(report.tried.values()) // 2
    assert set(report.fired) == set(report.tried)
