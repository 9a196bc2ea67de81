"""A small table re-read is a few inputs: the similarity rule counts distinct inputs on tables
(serve/copies.py)."""

from __future__ import annotations

import numpy as np

from mlwarden.serve.config import Detection
from mlwarden.serve.copies import leaders
from mlwarden.serve.monitor import Monitor

_DET = {"similarity": {"radius": 0.1, "min_neighbours": 30, "window": 1000},
        "dilution": {"enabled": False}, "blacklight": {"enabled": False},
        "prada": {"enabled": False}, "manifold": {"enabled": False}}  # fmt: skip


def _table(rng: np.random.Generator) -> np.ndarray:
    """200 rows of 10 features: 10 dense groups of 20 rows (each row ~0.085 RMS from its
    group's others: within the radius, not each other's copies), the groups far apart."""
    centres = rng.uniform(0.2, 0.8, (10, 10))
    rows = centres[:, None, :] + rng.normal(0, 0.06, (10, 20, 10))
    return np.clip(rows.reshape(200, 10), 0, 1).astype(np.float32)


def _similarity(mon: Monitor, xs: np.ndarray) -> list[int]:
    """The queries of ``xs`` the similarity rule flags (batches of 8: the alerts of
    one-query calls)."""
    found = [i + j for i in range(0, len(xs), 8)
             for j in mon.inspect("k", xs[i : i + 8], np.zeros(len(xs[i : i + 8]), np.int64))
             .get("similarity", [])]  # fmt: skip
    return found


def _monitor(table: bool) -> Monitor:
    mon = Monitor(Detection.model_validate(_DET), shape=[10], scale=1.0)
    assert mon.table  # rows of 10 values: a table
    mon.table = table  # off: the count of queries, as before session 15
    return mon


def test_a_small_table_re_read_with_small_noise_is_not_a_search() -> None:
    rng = np.random.default_rng(3)
    rows = _table(rng)
    # three passes over the table in shuffled order, each read with N(0, 0.01) noise
    xs = np.concatenate([rows[rng.permutation(200)] for _ in range(3)])
    xs = np.clip(xs + rng.normal(0, 0.01, xs.shape), 0, 1).astype(np.float32)
    assert len(_similarity(_monitor(False), xs)) > 50  # each group's copies counted: flagged
    assert _similarity(_monitor(True), xs) == []


def test_a_noisy_search_on_a_table_row_is_flagged_as_before() -> None:
    rng = np.random.default_rng(4)
    rows = _table(rng)
    x0, delta = rows[0].astype(np.float64), np.zeros(10)
    xs = []
    for _ in range(200):  # redteam14's search: two coordinates set to +-0.1, fresh noise
        step = delta.copy()
        step[rng.choice(10, 2, replace=False)] = rng.choice([-0.1, 0.1], 2)
        xs.append(np.clip(x0 + step + rng.normal(0, 0.05, 10), 0, 1))
        delta = step if rng.random() < 0.3 else delta
    xs = np.asarray(xs, dtype=np.float32)
    flagged = _similarity(_monitor(True), xs)
    assert flagged == _similarity(_monitor(False), xs) and len(flagged) >= 5


def test_leaders_count_a_walk_by_its_distance_not_its_steps() -> None:
    # copies of one point count once; a walk of steps under the copy radius counts one
    # input for each copy radius it moves (greedy leaders, not chains of copies)
    rng = np.random.default_rng(5)
    point = np.full(10, 0.5, dtype=np.float32)
    copies = (point + rng.normal(0, 0.001, (50, 10))).astype(np.float32)
    assert leaders(copies, 0.01, 40) == 1
    walk = (point + np.arange(100)[:, None] * 0.01).astype(np.float32)  # 0.01 a value a step
    # copy radius 0.1 (squared 0.01 summed over 10 values: 0.032 RMS): ~1 leader per 4 steps
    assert 20 <= leaders(walk, 0.01, 40) <= 34
    assert leaders(walk, 0.01, 5) == 5  # counting stops at need
