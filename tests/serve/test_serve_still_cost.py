"""The still-ball rule's cost a candidate is bounded (issue 19, session 10).

:func:`mlwarden.serve.stationary.still` judged each candidate with a pass over the whole
history (``r - q`` for 10,000 rows, ~4.5 ms a query on a stream whose every query is a
candidate); it now measures every candidate of a batch in one matrix product, computes
again only the distances near a limit (at most ``EXACT`` a candidate) and gathers only
the newest ``CAP`` rows of a ball (all that its tests read). The verdicts and the
clouds that wait are those of the one-query code (kept here as the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.serve import stationary
from mlwarden.serve.config import Similarity as SimilarityConfig
from mlwarden.serve.dilution import Dilution
from mlwarden.serve.monitor import Similarity
from mlwarden.serve.stationary import CAP, EXACT, MIN_ROWS, TIGHT, WORK, moving, recoded, still


def _reference(sim, vs, cand, before, tight, wide):  # type: ignore[no-untyped-def]
    """Session 9's still(): every candidate's balls from ``r - q`` over every row."""
    hist, radius = len(sim._ring), sim.config.radius
    near = radius if tight is None else tight * radius
    wide = None if vs.shape[1] < stationary.MIN_VALUES else wide
    reach = radius if wide is None else wide * radius
    limits = [r * r * vs.shape[1] for r in (near, radius, reach)]
    bar = None if tight is None else radius
    parts = [(r, g) for r, g in stationary._numbered(sim, vs, before) if len(r)]
    out, small = set(), {}
    for j in cand:
        q, me = np.asarray(vs[j], dtype=np.float32), before.first + j
        balls = []
        for limit in limits:
            rows, ids = [], []
            for part, gid in parts:
                diff = part - q
                close = (
                    (np.einsum("ij,ij->i", diff, diff) < limit) & (gid < me) & (gid >= me - hist)
                )
                rows.append(part[close])
                ids.append(gid[close])
            order = np.argsort(np.concatenate(ids))
            balls.append((np.concatenate(rows)[order], np.concatenate(ids)[order]))
        cloud = np.concatenate([balls[0][0], q[None]])
        if len(cloud) >= MIN_ROWS:
            if not moving(cloud, bar):
                out.add(j)
            continue
        copy = len(cloud) >= 2 and 2 * (len(cloud) - 1) >= len(balls[1][1])
        held = np.concatenate([balls[1][0], q[None]]) if copy else None
        if held is not None and len(held) >= MIN_ROWS:
            if not moving(held, bar):
                out.add(j)
            continue
        far = np.concatenate([balls[2][0][-(CAP - 1) :], q[None]]) if wide is not None else None
        if far is not None and recoded(far):
            out.add(j)
        elif held is not None:
            small[j] = (held, far)
    return out, small


def _feed(history: int, stream: np.ndarray, batch: int, tight: float | None, wide: float | None):  # type: ignore[no-untyped-def]
    """Feed ``stream`` to a similarity history in batches, judging every query of each."""
    sim = Similarity(SimilarityConfig(history=history, window=min(history, 1000)), stream.shape[1])
    for i in range(0, len(stream), batch):
        vs = stream[i : i + batch]
        before = Dilution.snapshot(sim, len(vs))
        sim.observe_many(vs)
        yield sim, vs, before, tight, wide


def _walk(n: int, dims: int, seed: int) -> np.ndarray:
    """A noisy search in reduced space (every query a candidate) mixed with resends."""
    rng = np.random.default_rng(seed)
    x0, pool = rng.random(dims), rng.random((4, dims))
    out, at = [], x0.copy()
    for i in range(n):
        if i % 3 == 2:
            out.append(pool[rng.integers(4)] + rng.normal(0, 0.002, dims))
            continue
        at = at + (rng.random(dims) < 0.05) * rng.choice([-0.02, 0.02], dims) * (rng.random() < 0.3)
        out.append(at + rng.normal(0, rng.choice([0.001, 0.005, 0.02]), dims))
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize(
    ("history", "batch", "wide"),
    [(40, 8, 2.0), (300, 1, 2.0), (300, 8, None), (1000, 8, 2.0), (300, 140, 2.0)],  # 140: chunks
)
def test_still_gives_the_one_query_verdicts(history: int, batch: int, wide: float | None) -> None:
    stream = _walk(420, 64, history)
    judged = 0
    for sim, vs, before, tight, w in _feed(history, stream, batch, TIGHT, wide):
        cand = list(range(len(vs)))
        got, waits = still(sim, vs, cand, before, tight, w)
        want, ref_waits = _reference(sim, vs, cand, before, tight, w)
        assert got == want and set(waits) == set(ref_waits)
        for j, cloud in waits.items():
            held, far = ref_waits[j]
            assert np.array_equal(cloud.rows, held)
            mine = cloud.far
            assert (mine is None) == (far is None)
            assert mine is None or np.array_equal(mine, far)
        judged += len(got) + len(waits)
    assert judged > 50  # the stream puts clouds of every kind before the rule


def test_rows_examined_a_candidate_do_not_grow_with_the_history() -> None:
    for history in (600, 2400):
        stream = _walk(history + 48, 64, 7)
        for k, args in enumerate(_feed(history, stream, 8, TIGHT, 2.0)):
            if k == history // 8:
                WORK.update(candidates=0, exact=0, gathered=0)
            if k >= history // 8:
                still(args[0], args[1], list(range(len(args[1]))), *args[2:])
        assert WORK["candidates"] == 48
        # the newest CAP rows of at most three balls, and few distances computed again
        assert WORK["gathered"] <= 1.2 * (CAP - 1) * WORK["candidates"]
        assert WORK["exact"] <= 0.02 * history * WORK["candidates"]


def test_rows_put_on_a_limit_are_not_computed_again_past_the_bound() -> None:
    # rows x0 + a s, s: 8 of 16 coordinates (each row drawn afresh): two sharing 4 of
    # them (38% of pairs) lie sqrt(8) a apart, exactly the own cloud's limit
    cfg = SimilarityConfig(history=3000)
    a = np.sqrt((TIGHT * cfg.radius) ** 2 * 64 / 8)
    rng = np.random.default_rng(0)
    stream = np.full((3040, 64), 0.5, dtype=np.float32)
    for row in stream:
        row[rng.choice(16, 8, replace=False)] += a
    WORK.update(candidates=0, exact=0, gathered=0)
    for k, (sim, vs, before, tight, wide) in enumerate(_feed(3000, stream, 8, TIGHT, 2.0)):
        if k >= 375:
            still(sim, vs, list(range(len(vs))), before, tight, wide)
    assert WORK["candidates"] == 40
    assert WORK["exact"] <= EXACT * WORK["candidates"]


def _settle_reference(sim, vs, before, held, tight, wide):  # type: ignore[no-untyped-def]
    """Session 9's settle(): each held cloud against the batch, one at a time (with
    session 12's count of later rows within ``CHAIN`` radii: under ``LEFT``, dropped)."""
    hist, radius = len(sim._ring), sim.config.radius
    limit = radius * radius * vs.shape[1]
    chain = (stationary.CHAIN * radius) ** 2 * vs.shape[1]
    reach = limit * (1.0 if wide is None else wide * wide)
    bar = None if tight is None else radius
    ids = before.first + np.arange(len(vs))
    batch = np.asarray(vs, dtype=np.float32)
    stand, waiting = [], []
    for h in held:
        diff = batch - h.q
        d2 = np.einsum("ij,ij->i", diff, diff)
        far = d2 < reach if h.far is not None else np.zeros(len(diff), dtype=bool)
        later = (ids > h.gid) & (ids <= h.gid + stationary.HOLD)
        h.around += int(np.count_nonzero(later & (d2 < chain)))
        verdict = None
        for k in np.flatnonzero(later & ((d2 < limit) | far)).tolist():
            verdict = stationary._join(h, batch[k], int(ids[k]), hist, d2[k] < limit, far[k], bar)
            if verdict is not None:
                break
        if verdict is None and ids[-1] >= h.gid + stationary.HOLD:
            verdict = h.around >= stationary.LEFT
        if verdict is None:
            waiting.append(h)
        elif verdict:
            stand.append(h)
    return stand, waiting


def _copies(clouds: list[stationary.Cloud]) -> list[stationary.Cloud]:
    return [stationary.Cloud(**{**vars(c), "rows": c.rows.copy(), "ids": c.ids.copy()})
            for c in clouds]  # fmt: skip


@pytest.mark.parametrize(("batch", "width"), [(1, 0.3), (8, 0.3), (1, 1.0), (8, 1.0)])
def test_settle_gives_the_one_cloud_at_a_time_verdicts(batch: int, width: float) -> None:
    # bursts of 2-5 noisy copies of inputs near each other: many clouds wait, some settle;
    # of inputs 4 radii apart (width 1.0): those that never fill are dropped (LEFT)
    rng = np.random.default_rng(batch)
    pool = rng.random((30, 64)) * width + 0.5 - width / 2
    stream = np.asarray([pool[i] + rng.normal(0, 0.004, 64) for i in rng.integers(0, 30, 150)
                         for _ in range(int(rng.integers(2, 6)))], dtype=np.float32)  # fmt: skip
    held: list[stationary.Cloud] = []
    decided = 0
    for sim, vs, before, tight, wide in _feed(500, stream, batch, TIGHT, 2.0):
        _, small = still(sim, vs, list(range(len(vs))), before, tight, wide)
        held += list(small.values())
        want = _settle_reference(sim, vs, before, _copies(held), tight, wide)
        got = stationary.settle(sim, vs, before, held, tight, wide)
        assert [c.gid for c in got[0]] == [c.gid for c in want[0]]
        assert [c.gid for c in got[1]] == [c.gid for c in want[1]]
        decided += len(held) - len(got[1])
        held = got[1]
    assert decided > 20
