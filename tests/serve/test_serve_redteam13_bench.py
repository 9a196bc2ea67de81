"""The red team's session-13 attackers do what ``benchmarks/gateway_detection_redteam13.py``
says.

A figure of these plans means something only if the traffic is what the plan claims: a
shape drawn afresh each query at the same cost as white noise (``morph``), the attacked
input's nearest natural inputs (``near``), a second search interleaved (``twin``), 50-100
benign queries between attack queries (``slow``), a fresh key every few queries
(``keys``); and only attack queries count against the budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tests.serve.conftest import bench_module


@pytest.fixture(scope="module")
def rt() -> Any:
    return bench_module("gateway_detection_redteam13")


def _kind(rt: Any, shape: tuple[int, ...] = (1, 8, 8), n: int = 300) -> Any:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, *shape)).astype(np.float32)
    m = x.reshape(n, -1)[:, ::5].mean(axis=1)
    y = (m > np.median(m)).astype(np.int64)
    model = LogisticRegression(max_iter=500).fit(x.reshape(n, -1), y)
    return rt.long.Kind(x, x, (x, y), model, [], (0.0, 1.0), "tensor", n)


class _Count:
    """A defence that counts each key's queries and flags none."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.rows: list[np.ndarray] = []

    def inspect(self, key: str, feats: np.ndarray, *_: Any) -> dict[str, list[int]]:
        self.seen[key] = self.seen.get(key, 0) + 1
        self.rows.append(np.asarray(feats[0], dtype=np.float64).reshape(-1))
        return {}


def _pool(n: int = 400, shape: tuple[int, ...] = (1, 8, 8)) -> tuple[Any, ...]:
    pool = np.random.default_rng(5).uniform(0, 1, (n, *shape)).astype(np.float32)
    return pool, np.zeros(n, dtype=np.int64), None


def test_morph_changes_shape_each_query_at_whites_cost(rt: Any) -> None:
    kind = _kind(rt, (3, 16, 16))
    draw = rt.morph(kind, (3, 16, 16), 0)
    rng = np.random.default_rng(1)
    ns = np.stack([draw(rng, 0.1) for _ in range(300)])
    assert np.sqrt((ns**2).mean()) == pytest.approx(0.1, rel=0.15)
    # blocks (every channel alike, 16 values) appear, and so does white noise
    alike = [bool(np.array_equal(n[0], n[2])) for n in ns]
    assert 0.1 < np.mean(alike) < 0.35  # one shape in five
    assert len({a for a in alike[:10]}) == 2 or len({a for a in alike[:30]}) == 2
    table = rt.morph(_kind(rt, (12,)), (12,), 0)
    sparse = [int((table(rng, 0.1) != 0).sum()) for _ in range(200)]
    assert 0.1 < np.mean(np.array(sparse) == 2) < 0.4  # sparse2, one of four


def test_near_sends_the_nearest_natural_inputs_each_once(rt: Any) -> None:
    kind, mon = _kind(rt), _Count()
    pool = _pool()
    gate = rt.Near(kind, rt.Detection(), mon, "log", mix=2, decoys=pool)
    x0 = kind.data[0]
    for _ in range(10):
        gate.ask(x0)
    assert gate.sent == 10 and mon.seen == {"k": 10 + 2 * 9}  # none before the first
    dist = ((pool[0].reshape(400, -1) - x0.reshape(-1)) ** 2).sum(axis=1)
    near = [r for j, r in enumerate(mon.rows) if j % 3]  # attack, near, near, attack...
    want = pool[0].reshape(400, -1)[np.argsort(dist)[:18]].astype(np.float64)
    assert np.allclose(np.stack(near), want)


def test_sameclass_sends_natural_inputs_of_the_attacked_class_each_once(rt: Any) -> None:
    kind, mon = _kind(rt), _Count()
    feats = kind.data[:200]
    labels = kind.labels(feats)  # the pool's classes (rw._benign: the model's labels)
    gate = rt.SameClass(kind, rt.Detection(), mon, "log", mix=3, decoys=(feats, labels, None))
    x0 = kind.data[0]
    for _ in range(8):
        gate.ask(x0)
    sent = [r for j, r in enumerate(mon.rows) if j % 4]  # attack, 3 of its class, attack...
    y0 = kind.labels(x0[None])[0]
    assert len(sent) == 21 and (kind.labels(np.stack(sent)) == y0).all()
    assert len({r.tobytes() for r in sent}) == 21 and (labels != y0).any()


def test_slow_sends_50_to_100_benign_queries_between_attack_queries(rt: Any) -> None:
    kind, mon = _kind(rt), _Count()
    gate = rt.Slow(kind, rt.Detection(), mon, "log", mix=1, decoys=_pool(2500))
    for _ in range(6):
        gate.ask(kind.data[0])
    assert gate.sent == 6
    gaps = np.diff([j for j, r in enumerate(mon.rows) if np.allclose(r, kind.data[0].reshape(-1))])
    assert ((gaps >= 51) & (gaps <= 101)).all() and len(set(gaps.tolist())) > 1


def test_keys_moves_to_a_fresh_key_every_few_attack_queries(rt: Any) -> None:
    kind, mon = _kind(rt), _Count()
    gate = rt.Keys(kind, rt.Detection(), mon, "log", mix=1, decoys=_pool(), per_key=7)
    for _ in range(20):
        gate.ask(kind.data[0])
    assert mon.seen == {"k": 7, "a1": 7, "a2": 6} and gate.burnt == 0


def test_twin_interleaves_a_second_search_at_the_attacks_noise(rt: Any) -> None:
    kind, mon = _kind(rt), _Count()
    x0, x1 = kind.data[0].astype(np.float64), kind.data[1].astype(np.float64)
    y0 = int(kind.labels(x0[None])[0])
    heard = rt.Heard(None, x0.shape)
    gate = rt.Twin(kind, rt.Detection(), mon, "log", mix=1, other=(x1, 0), heard=heard)
    rt.rt11.oars(gate, x0, y0, 40, 0, scale=2.0, adapt=False, noise=heard)
    assert gate.sent == 40 and mon.seen == {"k": 80}
    rows = np.stack(mon.rows)
    to0 = np.abs(rows - x0.reshape(-1)).mean(axis=1)
    to1 = np.abs(rows - x1.reshape(-1)).mean(axis=1)
    assert (to1[0::2] < to0[0::2]).all() and (to0[1::2] < to1[1::2]).all()  # twin, attack, ...
    # the second search's noise is the attack's: sigma 0.05 x scale 2 (not clipped values)
    inner = (x1.reshape(-1) > 0.35) & (x1.reshape(-1) < 0.65)
    noise = (rows[0::2] - x1.reshape(-1))[:, inner]
    assert heard.sd == pytest.approx(0.1)
    assert 1.4826 * np.median(np.abs(noise)) == pytest.approx(0.1, rel=0.3)  # robust to blocks


def test_pad_resends_the_attacked_input_under_fresh_noise_only(rt: Any) -> None:
    kind, mon = _kind(rt), _Count()
    x0 = kind.data[0].astype(np.float64)
    y0 = int(kind.labels(x0[None])[0])
    heard = rt.Heard(None, x0.shape)
    gate = rt.Twin(kind, rt.Detection(), mon, "log", mix=1, other=(x0, y0), heard=heard, walk=False)
    rt.rt11.oars(gate, x0, y0, 30, 0, scale=1.0, adapt=False, noise=heard)
    pads = np.stack(mon.rows[0::2]) - x0.reshape(-1)
    inner = (x0.reshape(-1) > 0.2) & (x0.reshape(-1) < 0.8)
    assert np.abs(pads[:, inner]).max() < 0.05 * 5  # no +-0.1 block ever added on top
    assert 1.4826 * np.median(np.abs(pads[:, inner])) == pytest.approx(0.05, rel=0.25)
    assert len({r.tobytes() for r in mon.rows[0::2]}) == 30  # fresh noise each time


def test_wander_walks_the_noise_level_at_whites_cost(rt: Any) -> None:
    draw = rt.Wander(None, (400,), 0)
    rng = np.random.default_rng(2)
    ns = np.stack([draw(rng, 0.1) for _ in range(3000)])
    level = np.sqrt((ns**2).mean(axis=1))
    lo, hi = 0.1 * 0.5 / draw.NORM, 0.1 * 2 / draw.NORM  # 0.5x-2x, renormed
    assert level.min() > 0.85 * lo and level.max() < 1.15 * hi  # 400 values: +-4% each
    assert level.max() / level.min() > 2.5  # it wanders over the range
    assert np.abs(np.diff(np.log(level))).mean() < 0.15  # slowly: a walk, not a draw
    assert np.sqrt((ns**2).mean()) == pytest.approx(0.1, rel=0.3)


class _FlagPool(_Count):
    """Flags one given row (by its first value) wherever it is sent."""

    def __init__(self, marked: float) -> None:
        super().__init__()
        self.marked = marked

    def inspect(self, key: str, feats: np.ndarray, *_: Any) -> dict[str, list[int]]:
        super().inspect(key, feats)
        return {"blacklight": [0]} if float(feats[0].reshape(-1)[0]) == self.marked else {}


def test_a_flag_on_benign_traffic_is_kept_apart_from_one_on_the_search(rt: Any) -> None:
    kind = _kind(rt)
    pool = _pool(2500)
    mon = _FlagPool(float(pool[0][2000 + 120].reshape(-1)[0]))  # the 121st benign query
    gate = rt.Slow(kind, rt.Detection(), mon, "log", mix=1, decoys=pool, lo=50, hi=50)
    for _ in range(5):
        gate.ask(kind.data[0])
    assert gate.on_benign == 3 and gate.on_attack is None  # before the 3rd attack query
    assert gate.first == 3  # what redteam11's columns read: the key's first flag
    mon.marked = float(kind.data[0].reshape(-1)[0])
    gate.ask(kind.data[0])
    assert gate.on_attack == 6 and gate.on_benign == 3


def test_mirror_sends_the_last_query_reflected_through_the_input(rt: Any) -> None:
    kind, mon = _kind(rt), _Count()
    x0 = kind.data[0].astype(np.float64)
    y0 = int(kind.labels(x0[None])[0])
    gate = rt.Mirror(kind, rt.Detection(), mon, "log", mix=1, x0=x0)
    rt.rt11.oars(gate, x0, y0, 20, 0)
    assert gate.sent == 20 and mon.seen == {"k": 39}  # none before the first
    rows, flat = np.stack(mon.rows), x0.reshape(-1)
    for j in range(1, 20):  # rows: q1, m1, q2, m2, ...: m_j reflects q_j
        inner = (flat > 0.35) & (flat < 0.65)  # nothing clipped
        q, m = rows[2 * j - 2], rows[2 * j - 1]
        assert np.allclose((q + m)[inner] / 2, flat[inner], atol=1e-6)
        assert not np.allclose(q, m)


def test_fixed_runs_the_search_blind_at_the_given_scale_without_learning(rt: Any) -> None:
    import argparse

    kind, mon = _kind(rt), _Count()
    kind.calib = (kind.data, kind.labels(kind.data))
    args = argparse.Namespace(budget=25, fixed=3.0, shape="white", mix=0, own_secret=False)
    made = []
    res = rt.run_plan("x", kind, rt.Detection(), "wander", 0, mon, lambda: made.append(1), args)
    assert made == [] and res["learnt_on_own"] is None and res["scale"] == 3.0  # no own gateway
    assert res["first"] is None and res["keys"] == 1
