"""Alerts on a cloud whose answers stay put (serve/answers.py): drifting rows, not a search."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from mlwarden.serve.answers import SPREAD, WIDE, Answers, log_odds
from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor

DET = {"similarity": {"radius": 0.05}, "dilution": {"enabled": True}}


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, LogisticRegression]:
    """Breast-cancer rows min-max scaled, and a logistic model on half of them."""
    d = load_breast_cancer()
    x = ((d.data - d.data.min(0)) / (d.data.max(0) - d.data.min(0))).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    model = LogisticRegression(max_iter=1000).fit(x[order[:280]], d.target[order[:280]])
    return x[order[280:]], model


def _loggers(rows: np.ndarray, hours: int, seed: int) -> np.ndarray:
    """Sensor loggers read every hour, the hour's rows in random order: each value x (1 +
    N(0, 0.002)) x a daily cycle of +-1% (a per-feature phase), at 1/500 of the range
    (``benchmarks/gateway_detection_outside.py``'s resend client on tables)."""
    rng = np.random.default_rng(seed)
    phase = np.arange(rows.shape[1]) * 0.7
    out = []
    for h in range(hours):
        day = 1 + 0.01 * np.sin(2 * np.pi * h / 24 + phase)
        for r in rng.permutation(len(rows)):
            y = rows[r] * day * (1 + rng.normal(0, 0.002, rows.shape[1]))
            out.append(np.clip(np.round(y * 500) / 500, 0, 1))
    return np.asarray(out, dtype=np.float32)


def _flags(mon: Monitor, xs: np.ndarray, probs: np.ndarray | None, key: str = "k") -> list[int]:
    """1-based queries of ``xs`` that raised an alert (each sent alone, as the gateway does)."""
    out = []
    for i in range(len(xs)):
        p = None if probs is None else probs[i : i + 1]
        if mon.inspect(key, xs[i : i + 1], probs_labels(probs, i, xs), p):
            out.append(i + 1)
    return out


def probs_labels(probs: np.ndarray | None, i: int, xs: np.ndarray) -> np.ndarray:
    return np.zeros(1, dtype=np.int64) if probs is None else probs[i : i + 1].argmax(axis=1)


def _search(model: LogisticRegression, x0: np.ndarray, steps: int, size: float,
            seed: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A random search (Square-style blocks of ``size``, inside Linf 0.1, fresh noise of
    0.002 on every query): kept when the true class's probability drops."""
    rng = np.random.default_rng(seed)
    y0 = int(model.predict(x0[None])[0])
    delta, best, sent = np.zeros_like(x0), np.inf, []
    for _ in range(steps):
        cand = delta.copy()
        b = rng.choice(len(x0), 5, replace=False)
        cand[b] = np.clip(cand[b] + rng.choice([-size, size]), -0.1, 0.1)
        q = np.clip(x0 + cand + rng.normal(0, 0.002, x0.shape), 0, 1).astype(np.float32)
        sent.append(q)
        p = float(model.predict_proba(q[None])[0, y0])
        if p < best:
            best, delta = p, cand
    xs = np.stack(sent)
    return xs, model.predict_proba(xs)


def test_answers_ring_keeps_the_newest_and_knows_what_it_lost() -> None:
    ans = Answers(4)
    ans.write(0, np.array([1, 0, 1]), np.array([2.0, -1.0, 3.0], dtype=np.float32), 3)
    ans.write(3, None, None, 2)  # query 4 overwrites query 0's slot, with no answer
    labels, scores = ans.take(np.array([0, 1, 2, 3, 4]))
    assert labels.tolist() == [-1, 0, 1, -1, -1]
    assert np.isnan(scores[[0, 3, 4]]).all() and scores[1:3].tolist() == [-1.0, 3.0]
    lo = log_odds(np.array([[0.25, 0.75], [1.0, 0.0]]), np.array([1, 0]))
    assert lo[0] == pytest.approx(np.log(3)) and lo[1] == pytest.approx(13.8155, abs=1e-3)


def test_loggers_with_a_daily_cycle_are_quiet_given_the_answers(table) -> None:
    rows, model = table
    xs = _loggers(rows[:40], 30, seed=1)  # 1,200 queries, 30 readings a row
    probs = model.predict_proba(xs)
    det = Detection.model_validate({**DET, "answers": {"spread": SPREAD}})
    # the cycle moves each row's cloud: the still-ball rule lets its alerts stand
    assert len(_flags(Monitor(det, shape=[30]), xs, None)) > 100  # no answers: as before
    assert _flags(Monitor(det, shape=[30]), xs, probs) == []
    off = Detection.model_validate({**DET, "answers": {"spread": 0}})
    assert len(_flags(Monitor(off, shape=[30]), xs, probs)) > 100


def _drop_before(model: LogisticRegression, x0: np.ndarray, qp: np.ndarray, first: int) -> float:
    """The largest drop of the attacked class's log-odds among the answers before ``first``."""
    y0 = int(model.predict(x0[None])[0])
    start = log_odds(model.predict_proba(x0[None]), np.array([y0]))[0]
    if first <= 1:
        return 0.0
    return float(start - log_odds(qp[: first - 1], np.full(first - 1, y0)).min())


@pytest.mark.parametrize("size", [0.05, 0.005])
def test_a_search_among_the_loggers_is_flagged_before_it_gains_much(table, size) -> None:
    # steps of 0.05 (the outside red team's camouflaged search) and of 0.005 (an
    # attacker who read answers.py and keeps each step's change of answer small): the
    # answers within its cloud spread as it gains, and its alert stands past SPREAD
    rows, model = table
    benign = _loggers(rows[:40], 15, seed=2)
    bp = model.predict_proba(benign)
    on = Detection.model_validate({**DET, "answers": {"spread": SPREAD}})
    off = Detection.model_validate({**DET, "answers": {"spread": 0}})
    for k in range(3):
        x0 = rows[40 + k]
        qs, qp = _search(model, x0, 300, size, seed=k)
        gained = []
        for det in (on, off):
            mon = Monitor(det, shape=[30])
            assert _flags(mon, benign, bp) == [] or det is off
            hits = _flags(mon, qs, qp)
            assert hits and hits[0] <= 300
            gained.append(_drop_before(model, x0, qp, hits[0]))
        # what excused queries can add to what it had before any alert: SPREAD, about
        assert gained[0] <= gained[1] + SPREAD, gained


def test_a_drifting_row_whose_answer_changes_class_stands(table) -> None:
    rows, model = table
    xs = _loggers(rows[:40], 30, seed=1)
    probs = model.predict_proba(xs)
    # the same readings, but one logger's answers alternate between the two classes with
    # its cycle (a row on the decision boundary): a class change is what a search is after
    first_row = xs[0]
    mine = np.flatnonzero(np.abs(xs - first_row).max(axis=1) < 0.05)
    flip = probs.copy()
    flip[mine[1::2]] = flip[mine[1::2], ::-1]
    det = Detection.model_validate({**DET, "answers": {"spread": SPREAD}})
    hits = _flags(Monitor(det, shape=[30]), xs, flip)
    assert hits and set(hits) <= set((mine + 1).tolist())


def test_the_served_gateway_hands_the_model_answers_to_the_monitor(
    gw_config, sklearn_target
) -> None:
    from mlwarden.serve.app import _Caller, create_app

    cfg = gw_config(detection={"answers": {"spread": SPREAD}, "batch": 1})
    gateway = create_app(sklearn_target, cfg).state.gateway
    try:
        caller = _Caller("scores", gateway.roles["scores"])
        xs = np.random.default_rng(0).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
        gateway.infer(caller, xs)
        ans = gateway.monitor._keys["scores"].answers
        assert ans is not None
        labels, scores = ans.take(np.arange(3))
        probs = sklearn_target.estimator.predict_proba(xs.reshape(3, -1))
        assert labels.tolist() == probs.argmax(axis=1).tolist()
        assert np.allclose(scores, log_odds(probs, probs.argmax(axis=1)), atol=1e-4)
    finally:
        gateway.close()


def test_a_walk_whose_answers_stay_put_but_that_travels_stands(table) -> None:
    # a decision-based search (Boundary, HopSkipJump) walks from an input of another
    # class toward its target and keeps its answers one class, at about the same
    # confidence: steady answers, but a cloud that travels across the radius
    rows, _ = table
    rng = np.random.default_rng(3)
    start, target = rows[70], rows[71]
    t = np.linspace(0, 1, 300)[:, None]
    walk = (start + (target - start) * t + rng.normal(0, 0.002, (300, 30))).astype(np.float32)
    probs = np.tile([[0.27, 0.73]], (300, 1))
    det = Detection.model_validate({**DET, "answers": {"spread": SPREAD}})
    hits = _flags(Monitor(det, shape=[30]), walk, probs)
    assert hits, "a travelling walk excused for its steady answers"
    # excused only while its cloud is narrower than WIDE of the radius (RMS about its
    # mean): a straight walk of length L has an RMS width of L / sqrt(12)
    travelled = float(np.sqrt(np.mean((walk[hits[0] - 1] - walk[0]) ** 2)))
    assert travelled <= np.sqrt(12) * WIDE * DET["similarity"]["radius"] + 0.005, travelled


def test_a_narrow_search_sending_back_to_back_stands(table) -> None:
    # a search that creeps (0.01 RMS in all, narrower than WIDE of the radius) and whose
    # answers hardly move looks, cloud for cloud, like a logger's readings; but its
    # queries come one after another, not one in window / APART (25) queries of
    # the key (a logger's every 50): its alert stands as without the rule
    rows, model = table
    rng = np.random.default_rng(4)
    x0, way = rows[80], rows[81] - rows[80]
    way *= 0.01 / np.sqrt(np.mean(way**2))
    t = np.linspace(0, 1, 300)[:, None]
    walk = np.clip(x0 + way * t + rng.normal(0, 0.002, (300, 30)), 0, 1).astype(np.float32)
    probs = model.predict_proba(walk)
    on = Detection.model_validate({**DET, "answers": {"spread": SPREAD}})
    off = Detection.model_validate({**DET, "answers": {"spread": 0}})
    first = [_flags(Monitor(d, shape=[30]), walk, probs)[:1] for d in (on, off)]
    assert first[1] and first[0] == first[1]
