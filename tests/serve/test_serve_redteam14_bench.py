"""The red team's outside attacker (``benchmarks/gateway_detection_redteam14.py``) does what
its docstring says.

Its figures mean something only if the search is the adaptive one (fresh noise on every
query, the kept perturbation inside the Linf ball, a step kept only when the true class's
score drops), the mixed plans really send benign rows of another pool before each attack
query without exact resends, and the judge counts a flag where it falls (a flag on a
benign query sent before attack query t counts at t).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.serve.conftest import bench_module


@pytest.fixture(scope="module")
def rt() -> Any:
    return bench_module("gateway_detection_redteam14")


class _Fake:
    """A client whose model answers class 0 with the mean of the input's first half as
    its score; every query kept."""

    def __init__(self, name: str = "k") -> None:
        self.key, self.sent, self.ids = name, [], []  # type: str, list[np.ndarray], list[Any]

    def ask(self, x: np.ndarray, attack_no: int = 0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        self.sent.append(x)
        self.ids.append((f"{self.key}{len(self.ids)}", attack_no))
        s = float(x.reshape(-1)[: x.size // 2].mean())
        return np.array([s, 1 - s])


def test_the_search_sends_fresh_noise_and_keeps_only_improving_steps_in_the_ball(rt: Any) -> None:
    c = _Fake()
    run = rt.Run([c])
    x0 = np.full(40, 0.5)
    rt.search(run, x0, 0, 0.05, 60, 0)
    qs = np.stack(c.sent)
    assert len(qs) == 60 and len({q.tobytes() for q in qs}) == 60
    noise = qs - (x0 + np.stack([np.zeros(40), *run.clean[:-1]]))  # steps move 2 of 40
    assert 0.04 < np.median(np.abs(noise)) / 0.6745 < 0.06  # fresh N(0, 0.05) a query
    assert max(np.abs(d).max() for d in run.clean) <= rt.EPS + 1e-12
    quiet = rt.Run([_Fake()])
    rt.search(quiet, x0, 0, 0.0005, 60, 0)  # (near) noiseless: only improving steps kept
    first_half = [float((x0 + d)[:20].mean()) for d in quiet.clean]
    assert first_half[-1] < 0.45
    assert all(b <= a + 0.001 for a, b in zip(first_half, first_half[1:], strict=False))


def test_keys5_spreads_the_queries_round_robin(rt: Any) -> None:
    cs = [_Fake(f"k{i}") for i in range(5)]
    rt.search(rt.Run(cs), np.full(20, 0.5), 0, 0.05, 50, 1)
    assert [len(c.sent) for c in cs] == [10] * 5
    assert [n for _, n in cs[2].ids] == [3, 8, 13, 18, 23, 28, 33, 38, 43, 48]


def _case(rt: Any, rows: int, vary: Any) -> Any:
    pool = np.random.default_rng(0).uniform(0.1, 0.9, (rows, 6))
    return rt.Case("t", None, (6,), (pool, None), [(np.full(6, 0.5), 0)], pool,
                   lambda xs: np.zeros(len(xs), dtype=int), vary)  # fmt: skip


def test_mixing_sends_k_benign_rows_before_each_attack_query_and_never_resends(rt: Any) -> None:
    case = _case(rt, 7, rt.logger)
    c = _Fake()
    run = rt.Run([c], before=rt._mixer(rt.Pool(case, 3, 0), 2))
    rt.search(run, np.full(6, 0.5), 0, 0.05, 10, 0)
    assert [n for _, n in c.ids[:6]] == [-1, -1, 1, -2, -2, 2]
    benign = [q for q, (_, n) in zip(c.sent, c.ids, strict=True) if n < 0]
    assert len(benign) == 20 and len({q.tobytes() for q in benign}) == 20
    assert np.allclose(benign[0], case.pool[3]) and np.allclose(benign[6], case.pool[2])
    assert np.abs(benign[7] - case.pool[3]).max() < 0.02  # read again by the logger
    with pytest.raises(ValueError, match="used up"):
        bare = rt.Pool(_case(rt, 3, None), 0, 0)
        [bare.next() for _ in range(4)]


def test_the_judge_counts_a_flag_on_benign_traffic_at_the_next_attack_query(rt: Any) -> None:
    case = _case(rt, 50, None)
    c = _Fake()
    run = rt.Run([c], before=rt._mixer(rt.Pool(case, 0, 0), 1))
    rt.search(run, np.full(6, 0.5), 0, 0.05, 10, 0)
    benign_rid = next(rid for rid, n in c.ids if n == -4)
    attack_rid = next(rid for rid, n in c.ids if n == 6)
    res = rt.judge(case, run, np.full(6, 0.5), 0, {benign_rid: "dilution@0:1"}, 10)
    assert res["first"] == 4 and res["on_benign"] is True and res["alerts"] == "dilution@0:1"
    assert res["on_attack"] is None
    res = rt.judge(case, run, np.full(6, 0.5), 0, {attack_rid: "similarity@0:1"}, 10)
    assert res["first"] == 6 and res["on_benign"] is False and res["on_attack"] == 6
    none = rt.judge(case, run, np.full(6, 0.5), 0, {}, 10)
    assert none["first"] is None and none["at_flag"] == none["all"]


def test_fine_walks_in_small_steps_inside_the_ball(rt: Any) -> None:
    """``fine``: consecutive kept perturbations differ by at most ``step`` a value, the
    walk stays in the ball, and a kept step lowers the score (it can reach the edge)."""
    c = _Fake()
    run = rt.Run([c])
    x0 = np.full(40, 0.5)
    rt.search(run, x0, 0, 0.0005, 300, 0, step=0.01)
    kept = np.stack(run.clean)
    assert np.abs(np.diff(kept, axis=0)).max() <= 0.01 + 1e-12
    assert np.abs(kept).max() <= rt.EPS + 1e-12
    assert float((x0 + kept[-1])[:20].mean()) < 0.48  # it walked downhill
    qs = np.stack(c.sent)
    assert np.abs(np.diff(qs, axis=0)).max() < 0.03  # each query near the one before


def test_trees_case_attacks_held_out_rows_it_gets_right_and_mixes_in_others(
    rt: Any, tmp_path
) -> None:
    """The third case: attack targets are held-out rows the trees get right; the benign
    pool shares no row with the targets or the calibration sample."""
    case = rt.trees_case(tmp_path)
    xs = np.stack([x for x, _ in case.targets])
    assert len(xs) == 10 and (case.predict(xs) == [y for _, y in case.targets]).all()
    seen = {r.tobytes() for r in np.concatenate([xs, case.sample[0]])}
    assert not seen & {r.tobytes() for r in case.pool}
    assert case.vary is not None and case.pool.shape[1:] == case.shape
