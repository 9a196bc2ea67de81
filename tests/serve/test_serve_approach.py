"""A key's queries near one input whose answers walk down (serve/approach.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.serve.approach import OTHER, approach, ranks, series, trend
from mlwarden.serve.config import Detection
from mlwarden.serve.config import Similarity as SimilarityConfig
from mlwarden.serve.monitor import Monitor, Similarity

CORRECTED = lambda z, r1: z * np.sqrt((1 - r1) / (1 + r1)) if r1 > 0 else z  # noqa: E731


def test_ranks_average_ties() -> None:
    assert ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_trend_still_noise_walks_and_a_fall() -> None:
    """Answers in random order stay under the bar; a fall under noise is far past it; a
    random walk's fall is a walk's (its autocorrelation shrinks it under the bar)."""
    rng = np.random.default_rng(0)
    still = [CORRECTED(*trend(rng.normal(3, 1, 200))) for _ in range(200)]
    assert min(still) > -4.0
    fall = trend(np.linspace(3, 1, 200) + rng.normal(0, 1, 200))
    assert CORRECTED(*fall) < -5
    walks = [CORRECTED(*trend(np.cumsum(rng.normal(0, 0.2, 60)))) for _ in range(200)]
    raw = [trend(np.cumsum(rng.normal(0, 0.2, 60)))[0] for _ in range(200)]
    assert sum(z <= -5 for z in raw) > 10  # the uncorrected test flags walks
    assert sum(z <= -5 for z in walks) <= 2


def test_series_other_class_ranks_lowest_and_unanswered_left_out() -> None:
    labels = np.array([2, -1, 2, 5, 2], dtype=np.int16)
    scores = np.array([4.0, np.nan, 3.0, 6.0, np.nan], dtype=np.float32)
    assert series(labels, scores).tolist() == [4.0, 3.0, OTHER]
    assert series(np.full(3, -1, np.int16), np.full(3, np.nan, np.float32)) is None


def _brute(rows: np.ndarray, radius: float, hist: int, j_abs: int) -> list[int]:
    """Query numbers within the radius of query ``j_abs`` among the ``hist`` before it."""
    lo = max(0, j_abs - hist)
    d = np.sqrt(((rows[lo:j_abs] - rows[j_abs]) ** 2).mean(axis=1))
    return (lo + np.flatnonzero(d < radius)).tolist()


@pytest.mark.parametrize("batch", [1, 5])
def test_neighbours_are_the_counted_ones(batch: int) -> None:
    """``Similarity.neighbours``: the query numbers its counts found, the ring wrapped and
    the batch's own earlier queries included (no second scan)."""
    rng = np.random.default_rng(1)
    centre = rng.random(16).astype(np.float32)
    rows = np.clip(centre + rng.normal(0, 0.06, (90, 16)), 0, 1).astype(np.float32)
    sim = Similarity(SimilarityConfig(history=32, window=32, radius=0.1), 16)
    sim.observe_many(rows[:1])
    assert sim.neighbours(0) is None  # not kept unless asked
    sim = Similarity(SimilarityConfig(history=32, window=32, radius=0.1), 16)
    sim.keep = True
    for start in range(0, 90, batch):
        vs = rows[start : start + batch]
        recent, _ = sim.observe_many(vs)
        for j in range(len(vs)):
            got = sim.neighbours(j)
            assert got is not None
            assert got.tolist() == _brute(rows, 0.1, 32, start + j)
            assert len(got) == recent[j]


def _stream(n: int, fall: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` queries near one input (fresh noise each) and the model's scores for them:
    class 0's log-odds about 3 with noise of 1, falling by ``fall`` over the stream."""
    rng = np.random.default_rng(seed)
    x0 = rng.random((1, 8, 8)).astype(np.float32)
    xs = np.clip(x0 + rng.normal(0, 0.03, (n, 8, 8)), 0, 1).astype(np.float32)
    lo = 3 - fall * np.arange(n) / n + rng.normal(0, 1, n)
    p0 = 1 / (1 + np.exp(-lo))
    probs = np.stack([p0, 1 - p0], axis=1)
    return xs, probs


def _approach_flags(xs: np.ndarray, probs: np.ndarray | None, det: Detection) -> list[int]:
    mon = Monitor(det, shape=[8, 8])
    out = []
    for i in range(len(xs)):
        p = None if probs is None else probs[i : i + 1]
        labels = np.zeros(1, np.int64) if p is None else p.argmax(axis=1)
        if "approach" in mon.inspect("k", xs[i : i + 1], labels, p):
            out.append(i + 1)
    return out


ON = Detection.model_validate({"approach": {"enabled": True}})


def test_monitor_flags_a_falling_neighbourhood_not_a_still_one() -> None:
    det = ON
    xs, probs = _stream(150, 0.0, 3)
    assert _approach_flags(xs, probs, det) == []  # one input resent: answers scatter
    xs, probs = _stream(150, 3.0, 3)
    flagged = _approach_flags(xs, probs, det)
    assert flagged and flagged[0] <= 120
    assert _approach_flags(xs, None, det) == []  # no scores: not judged
    assert _approach_flags(xs, probs, Detection()) == []  # off by default


def test_approach_reads_only_answered_queries() -> None:
    """A query whose own answer is unknown is not judged (``Answers.take`` -1 / NaN)."""
    from mlwarden.serve.answers import Answers

    sim = Similarity(SimilarityConfig(history=64, window=64, radius=0.1), 4)
    sim.keep = True
    ans = Answers(64)
    rows = np.full((30, 4), 0.5, np.float32) + np.arange(30, dtype=np.float32)[:, None] * 1e-4
    ans.write(0, np.zeros(30, np.int16), np.linspace(5, -5, 30).astype(np.float32), 30)
    sim.observe_many(rows[:29])
    recent, _ = sim.observe_many(rows[29:])
    near = sim.near
    assert approach(sim, ans, recent, 29, 5.0, 20) == [0]
    assert sim.near is None  # dropped once read
    sim.near = near
    ans.write(29, None, None, 1)
    assert approach(sim, ans, recent, 29, 5.0, 20) == []


def test_a_rise_is_a_walk_too() -> None:
    """Two-sided: the start's class rising (a targeted search raising its target, or a
    start already past the boundary on a two-class model) is flagged as a fall is."""
    xs, probs = _stream(150, -3.0, 4)
    assert _approach_flags(xs, probs, ON)


def test_flags_the_same_across_a_restart() -> None:
    """The rule keeps nothing of its own: the answers ring and the similarity history
    are in the key's blob, so a stream cut by a restart is flagged where it was."""
    xs, probs = _stream(150, 3.0, 3)
    whole = _approach_flags(xs, probs, ON)
    mon = Monitor(ON, shape=[8, 8])
    out = []
    for i in range(len(xs)):
        if i == 60:
            blob = mon.dump("k")
            assert blob is not None
            mon = Monitor(ON, shape=[8, 8])
            mon.load("k", blob)
        p = probs[i : i + 1]
        if "approach" in mon.inspect("k", xs[i : i + 1], p.argmax(axis=1), p):
            out.append(i + 1)
    assert out == whole and whole
