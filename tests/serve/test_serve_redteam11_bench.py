"""The red team's session-11 attackers and clients do what
``benchmarks/gateway_detection_redteam11.py`` says.

OARS's figures mean something only if the attacker really learns from the defence's
rejections (its scale grows until its proposals pass, then the rejections stop) and a
client under ``block`` really loses the flagged answer and its key; query blinding's only
if each query is a fresh transform judged against the clean input under the same one;
the held-out clients' only if they send what their docstrings describe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tests.serve.conftest import bench_module


@pytest.fixture(scope="module")
def rt() -> Any:
    return bench_module("gateway_detection_redteam11")


def _kind(rt: Any, shape: tuple[int, ...] = (1, 8, 8)) -> Any:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (200, *shape)).astype(np.float32)
    y = (x.reshape(200, -1)[:, ::5].mean(axis=1) > 0.5).astype(np.int64)
    model = LogisticRegression(max_iter=500).fit(x.reshape(200, -1), y)
    return rt.long.Kind(x, x, (x, y), model, [], (0.0, 1.0), "tensor", 200)


class _Near:
    """A defence that rejects a query within RMS ``r`` of the key's previous query."""

    def __init__(self, r: float) -> None:
        self.r, self.last = r, {}  # type: float, dict[str, np.ndarray]
        self.keys: list[str] = []

    def inspect(self, key: str, feats: np.ndarray, *_: Any) -> dict[str, list[int]]:
        self.keys.append(key)
        prev, self.last[key] = self.last.get(key), feats[0].astype(np.float64)
        if prev is not None and np.sqrt(((prev - self.last[key]) ** 2).mean()) < self.r:
            return {"similarity": [0]}
        return {}


def _gate(rt: Any, kind: Any, mon: Any, action: str) -> Any:
    return rt.Gate(kind, rt.Detection(), mon, action)


def test_block_refuses_the_flagged_query_and_burns_the_key(rt: Any) -> None:
    kind = _kind(rt)
    gate = _gate(rt, kind, _Near(0.05), "block")
    x = kind.data[0]
    assert gate.ask(x)[1] is False
    answer, shown = gate.ask(x + 0.001)  # within 0.05 of the last: rejected
    assert answer is None and shown is True and gate.burnt == 1 and gate.first == 2
    assert gate.key != "k"
    answer, shown = gate.ask(x + 0.002)  # a fresh key: no previous query, answered
    assert answer is not None and shown is False
    assert np.allclose(answer, np.round(answer, 2)) and abs(answer.sum() - 1) < 0.02


def test_log_shows_nothing_and_throttle_answers(rt: Any) -> None:
    kind = _kind(rt)
    x = kind.data[0]
    log = _gate(rt, kind, _Near(0.05), "log")
    log.ask(x)
    answer, shown = log.ask(x + 0.001)  # flagged, but the client sees a plain answer
    assert answer is not None and shown is False and log.flags == 1 and log.burnt == 0
    thr = _gate(rt, kind, _Near(0.05), "throttle")
    thr.ask(x)
    answer, shown = thr.ask(x + 0.001)
    assert answer is not None and shown is True and thr.burnt == 1


def test_oars_learns_the_distance_the_defence_wants(rt: Any) -> None:
    """Proposals at the issue's noise (pairwise RMS ~0.07) are rejected by a defence
    that wants 0.2 between queries: the scale grows until they pass, then they pass."""
    kind = _kind(rt)
    x0 = kind.data[3].astype(np.float64)
    y0 = int(kind.labels(x0[None])[0])
    mon = _Near(0.2)
    gate = _gate(rt, kind, mon, "block")
    res = rt.oars(gate, x0, y0, 300, 0)
    assert res["scale"] >= 2.0  # grown from 1 (sigma 0.05) toward 0.2 / 0.07
    assert 2 <= gate.burnt <= 12
    late = [k for k in mon.keys[-150:]]
    assert len(set(late)) <= 2  # no rejections (new keys) late in the run
    assert len(res["deltas"]) == 300
    stuck = _gate(rt, kind, _Near(0.2), "block")
    fixed = rt.oars(stuck, x0, y0, 300, 0, adapt=False)  # no learning: rejected throughout
    assert fixed["scale"] == 1.0 and stuck.burnt > 100


def test_the_adaptive_proposal_avoids_rejected_blocks(rt: Any) -> None:
    prop = rt.Proposal(rt._positions((1, 8, 8), True))
    assert len(prop.positions) == 49
    prop.learn(5, True, True)
    prop.learn(5, True, True)
    assert prop.weights[5] == pytest.approx(0.25) and prop.scale == pytest.approx(2.25)
    draws = [prop.draw(np.random.default_rng(i)) for i in range(400)]
    assert draws.count(5) < 400 / 49  # rarer than any untouched block on average


def test_blinding_is_a_fresh_transform_a_query_and_repeatable(rt: Any) -> None:
    kind = _kind(rt, (3, 16, 16))
    shape = rt.blinding(0, 10)
    x = kind.data[0].astype(np.float64)
    a, b = shape(x, 0), shape(x, 1)
    assert np.array_equal(a, shape(x, 0))  # the same index: the same transform
    assert np.sqrt(((a - b) ** 2).mean()) > 0.02  # another index: another transform
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_blindw_always_adds_white_noise_of_0_03(rt: Any) -> None:
    """``blindw``: the transform's sensor noise is N(0, 0.03) on every query (a flat
    mid-grey image: the transform leaves it flat but for brightness and the noise)."""
    flat = np.full((1, 16, 16), 0.5)
    for i in range(5):
        out = rt.blinding(0, 5, white=0.03)(flat, i)
        assert 0.02 < float(out.std()) < 0.04
    assert {"blindw"} <= set(rt.ATTACKS) and rt.APPLIES["blindw"] == rt.APPLIES["blind"]


def test_crm_client_opens_autocompletes_and_reopens(rt: Any) -> None:
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (300, 12))
    xs = rt.crm(data, 400, np.random.default_rng(1))
    assert xs.shape == (400, 12) and xs.min() >= 0 and xs.max() <= 1
    changed = (np.abs(np.diff(xs, axis=0)) > 1e-6).sum(axis=1)
    assert (changed == 0).sum() >= 1 or len({r.tobytes() for r in xs}) < 400  # reopened leads
    assert ((changed >= 1) & (changed <= 6)).mean() > 0.3  # edits of a few fields


def test_thumbsizes_sends_five_sizes_of_each_photo(rt: Any) -> None:
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (50, 1, 8, 8)).astype(np.float32)
    xs = rt.thumbsizes(data, 50, np.random.default_rng(2))
    assert xs.shape == (50, 1, 8, 8)
    full = xs[4]  # the fifth size of the first photo is the photo, 8-bit
    assert np.allclose(full * 255, np.round(full * 255), atol=1e-3)
    blur = [np.abs(xs[i] - full).mean() for i in range(4)]
    assert blur[0] > blur[3] > 0  # the smallest thumbnail loses the most


class _Count:
    """A defence that rejects a key's ``n``-th query and every one after it."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, {}  # type: int, dict[str, int]

    def inspect(self, key: str, *_: Any) -> dict[str, list[int]]:
        self.seen[key] = self.seen.get(key, 0) + 1
        return {"similarity": [0]} if self.seen[key] >= self.n else {}


def test_oars_rotate_learns_how_many_queries_a_key_may_send(rt: Any) -> None:
    kind = _kind(rt)
    x0 = kind.data[3].astype(np.float64)
    y0 = int(kind.labels(x0[None])[0])
    mon = _Count(21)  # 20 answered, the 21st rejected
    gate = _gate(rt, kind, mon, "block")
    rt.oars(gate, x0, y0, 300, 0, adapt=False, rotate=True)
    assert gate.burnt == 1 and gate.first == 21  # one key lost to learn the length
    counts = list(mon.seen.values())  # in the order the keys were used
    assert counts[0] == 21 and set(counts[1:-1]) == {19}  # then 19 a key, none rejected
    assert 1 <= counts[-1] <= 19 and sum(counts) == 300


def test_mix_sends_benign_rows_first_and_counts_only_attack_queries(rt: Any) -> None:
    kind = _kind(rt)
    rows = np.random.default_rng(5).uniform(0, 1, (2100, 1, 8, 8)).astype(np.float32)
    mon = _Count(10**6)
    gate = rt.Gate(kind, rt.Detection(), mon, "block", mix=3,
                   decoys=(rows, np.zeros(2100, dtype=np.int64), None))  # fmt: skip
    for _ in range(4):
        gate.ask(kind.data[0])
    assert gate.sent == 4 and mon.seen == {"k": 16} and gate.used_decoys == 12
    led = rt.Gate(kind, rt.Detection(), _Count(10**6), "log", mix=3, lead=1,
                  decoys=(rows, np.zeros(2100, dtype=np.int64), None))  # fmt: skip
    for _ in range(2):
        led.ask(kind.data[0])
    assert led.used_decoys == 7  # one extra benign query before the first attack query only
    blocked = rt.Gate(kind, rt.Detection(), _Count(3), "block", mix=3,
                      decoys=(rows, np.zeros(2100, dtype=np.int64), None))  # fmt: skip
    answer, shown = blocked.ask(kind.data[0])  # the third decoy is rejected: the key is gone
    assert shown is True and blocked.burnt == 1 and blocked.first == 1
    assert answer is not None  # the attack query itself went out on a fresh key


class _Rec:
    """A defence that flags nothing and keeps every input a key sent."""

    def __init__(self) -> None:
        self.rows: dict[str, list[np.ndarray]] = {}

    def inspect(self, key: str, feats: np.ndarray, *_: Any) -> dict[str, list[int]]:
        self.rows.setdefault(key, []).extend(np.asarray(feats, dtype=np.float64))
        return {}


def _digests(rows: Any) -> set[bytes]:
    return {np.asarray(r, dtype=np.float32).tobytes() for r in rows}


def test_mix_splits_a_pool_no_longer_than_the_warm_up(rt: Any) -> None:
    """Breast cancer's and wine's benign pools (285, 89 rows) are no longer than the
    warm-up: the first half warms the key, the second half (disjoint) is mixed in, and once
    it is used up its rows come again as a logger reads them later: distinct from every
    row sent before (an exact resend would be dropped as a repeat), within 2% of their own."""
    rng = np.random.default_rng(3)
    pool = rng.uniform(0.05, 0.95, (285, 1, 8, 8)).astype(np.float32)
    kind = rt.long.Kind(pool, pool, (pool, np.zeros(285, dtype=np.int64)), _kind(rt).model,
                        [], (0.0, 1.0), "tensor", 285)  # fmt: skip
    assert rt.split(285) == 142 and rt.split(89) == 44 and rt.split(17100) == rt.long.WARM
    warmed = _Rec()
    kind.monitor = lambda det: warmed  # type: ignore[method-assign]
    rt._warm(kind, rt.Detection(), True)
    assert _digests(warmed.rows["k"]) == _digests(pool[:142])
    rec = _Rec()
    gate = rt.Gate(kind, rt.Detection(), rec, "log", mix=10,
                   decoys=(pool, np.zeros(285, dtype=np.int64), None))  # fmt: skip
    for _ in range(30):  # 300 benign rows: the 143 mixed-in rows twice, then 14 more
        gate.ask(kind.data[0])
    benign = [r for i, r in enumerate(rec.rows["k"]) if i % 11 != 10]
    assert len(benign) == 300 and _digests(benign[:143]) == _digests(pool[142:])
    assert len(_digests(benign)) == 300  # no exact resend, none a warm-up row
    assert not _digests(benign) & _digests(pool[:142])
    again = np.stack(benign[143:286]).reshape(143, -1)
    rel = np.abs(again - pool[142:].reshape(143, -1)) / pool[142:].reshape(143, -1)
    assert 0 < rel.max() < 0.02 + 1 / 500 / 0.05
    assert "split in half" in rt.pool_note("wine", kind)
    big = rt.long.Kind(np.zeros((4000, 3)), None, (None, None), None, [], (0.0, 1.0))
    assert "split" not in rt.pool_note("tabular", big)


def test_mix_refuses_an_empty_pool(rt: Any) -> None:
    kind = _kind(rt)
    gate = rt.Gate(kind, rt.Detection(), _Count(10**6), "log", mix=1,
                   decoys=(np.zeros((0, 1, 8, 8)), np.zeros(0, dtype=np.int64), None))  # fmt: skip
    with pytest.raises(ValueError, match="past the warm-up"):
        gate.ask(kind.data[0])
    assert gate.sent == 0


def test_the_attackers_own_gateway_is_on_another_secret(rt: Any) -> None:
    """``oars-blind`` learns on a gateway like the target's, not on the target's secret;
    the process's secret source is left as it was."""
    kind = _kind(rt)
    det = rt.Detection()
    keep = rt.monitor.new_secret
    rt.rw.fix_secret(7)
    try:
        rt.SECRET_SEED = 7
        target, twin = kind.monitor(det), kind.monitor(det)
        own = rt._own(lambda: kind.monitor(det))
        assert target.sketch.tag == twin.sketch.tag  # the seed's secret: reproducible
        assert own.sketch.tag != target.sketch.tag
        assert kind.monitor(det).sketch.tag == target.sketch.tag  # restored after
    finally:
        rt.monitor.new_secret, rt.SECRET_SEED = keep, 0
