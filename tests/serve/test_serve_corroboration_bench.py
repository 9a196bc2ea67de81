"""benchmarks/gateway_corroboration.py's k-of-W arithmetic, the per-query flags the
benchmarks write for it, and ``--secret-seed`` of the clients' and plain benchmarks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.serve.conftest import bench_module


@pytest.fixture(scope="module")
def corr() -> Any:
    return bench_module("gateway_corroboration")


@pytest.fixture(scope="module")
def plain() -> Any:
    return bench_module("gateway_detection_plain")


def test_k_of_w_alarms_only_on_corroborated_suspicions(corr: Any) -> None:
    fl = [(5, "a"), (100, "a"), (130, "b"), (131, "a"), (400, "a"), (460, "a")]
    assert corr.alarms(fl, 1, 50) == [5, 100, 130, 131, 400, 460]  # today: each one
    assert corr.alarms(fl, 2, 50) == [130, 131]  # 100 alone; 130 has 100 within 50
    assert corr.alarms(fl, 2, 61) == [130, 131, 460]  # 400 and 460 within 61
    assert corr.alarms(fl, 3, 50) == [131]
    assert corr.alarms(fl, 2, 50, apart=True) == [130, 131]  # a and b agree
    assert corr.alarms([(9, "a"), (9, "b")], 2, 1, apart=True) == [9]  # one query, two rules
    assert corr.alarms([(9, "a"), (9, "b")], 2, 10) == []  # one query is one suspicion
    assert corr.isolated(fl, 50) == 3  # 5, 400, 460 (60 apart)


def test_attack_rows_and_benign_cells_are_read_back(corr: Any, tmp_path: Path) -> None:
    load = {"detection": {"attacks": {"rs_0": {
        "flags": [[12, "blacklight@0:1,prada@0:1"], [15, "blacklight@0:1"]],
        "wrong": [14], "wrong_near": [], "queries_sent": 300}}}}  # fmt: skip
    (tmp_path / "load.json").write_text(json.dumps(load))
    rows = corr.attack_rows(tmp_path / "load.json")
    assert rows["rs_0"]["flags"] == [(12, "blacklight"), (12, "prada"), (15, "blacklight")]
    assert rows["rs_0"]["wrong"] == 14 and rows["rs_0"]["near"] is None
    assert corr.alarms(rows["rs_0"]["flags"], 2, 10) == [15]  # 14 answered before it
    assert corr._before(14, 15) and not corr._before(14, 12) and corr._before(3, None)
    plain = {"digits": {"calibration": {}, "sorted": [
        {"any": 1.0, "n": 2000, "at": [7], "flags": {"any": [7, 9], "blinding": [7, 9]}}]}}  # fmt: skip
    (tmp_path / "plain.json").write_text(json.dumps(plain))
    cells = corr.plain_cells(tmp_path / "plain.json")
    assert cells == {"digits sorted #0": (2000, [(7, "blinding"), (9, "blinding")])}


def test_plain_flags_record_every_flagged_query(plain: Any, digits: Any, digits_model: Any) -> None:
    """A noiseless block walk on one digit: ``flags`` holds each flagged query, ``at``
    the first 20 of them, and the rate counts the same queries."""
    from mlwarden.serve.config import Detection

    xtr, ytr, xte, _ = digits
    x = xte.astype(np.float32)
    kind = plain.long.Kind(x, x, (xtr, ytr), digits_model, [], (0.0, 1.0), "tensor", len(x))
    rng = np.random.default_rng(1)
    walk = [x[0].copy()]
    for _ in range(59):
        q = walk[-1].copy()
        r, c = rng.integers(0, 7, 2)
        q[0, r : r + 2, c : c + 2] = np.clip(q[0, r : r + 2, c : c + 2] + 0.1, 0, 1)
        walk.append(q)
    res = plain.flagged(kind, Detection(), np.stack(walk))
    every = res["flags"]["any"]
    assert every and every[: len(res["at"])] == res["at"]
    assert res["any"] == round(len(every) * 1000 / 60, 1)
    rules = {q for k, v in res["flags"].items() if k != "any" for q in v}
    assert rules == set(every)


def test_secret_seed_fixes_the_sketch_secret(plain: Any, monkeypatch: Any) -> None:
    from mlwarden.serve import monitor
    from mlwarden.serve.config import Detection

    monkeypatch.setattr(monitor, "new_secret", monitor.new_secret)  # undone after the test

    def tag() -> int:
        sketch = monitor.Monitor(Detection(), shape=[3, 32, 32]).sketch
        assert sketch is not None
        return int(sketch.tag)

    ap = argparse.ArgumentParser()
    plain.clients.add_secret_arg(ap)
    plain.clients.use_secret(ap.parse_args([]))
    assert tag() != tag()  # no --secret-seed: fresh per gateway, as before
    plain.clients.use_secret(ap.parse_args(["--secret-seed", "3"]))
    three = tag()
    assert tag() == three  # a rerun's gateways measure under one secret
    plain.clients.use_secret(ap.parse_args(["--secret-seed", "4"]))
    assert tag() != three and tag() == tag()


def test_issue_benchmark_records_wrong_answers_and_every_flag() -> None:
    """gateway_load's detection part: a target's requests answered wrong (any row; a row
    within Linf 0.1 of the original) and each flagged row's attack query number."""
    load = bench_module("gateway_load")
    x0 = np.zeros(4, dtype=np.float32)
    answers = iter([[[0.9, 0.1]], [[0.2, 0.8], [0.9, 0.1]], [[0.3, 0.7]]])

    class Target:
        def _predict(self, x: np.ndarray) -> np.ndarray:
            return np.asarray(next(answers))

    target = Target()
    wrong = load._watch(target, x0, 0)
    target._predict(x0[None])  # right
    target._predict(np.stack([x0 + 0.5, x0]))  # wrong, 0.5 away; the near row right
    target._predict((x0 + 0.05)[None])  # wrong, within 0.1
    assert wrong == ([2, 3], [3])
    rows = [("a", ""), ("b", "blinding@0:1"), ("c", ""), ("d", "prada@0:1")]
    assert load._flag_rows(rows, None) == [(2, "blinding@0:1"), (4, "prada@0:1")]
