"""The answers rule's cost a candidate is bounded (issue 19, session 10).

:func:`mlwarden.serve.answers.steady` linked each candidate's cloud (up to ``CAP`` + 1 =
1,024 rows) with a full distance matrix: 6.7-8.6 ms a query for a drifting search on a
table. The linkage now measures distances only from each level's new rows to the rows
not yet reached (past ``LEVELS`` levels, the rows left at once) and stops at the first
row that makes the query stand, or once the rows reached are too wide for the cloud to pass
the width test (issue 24f: a chain of ~1,000 rows cost ~15 ms a query). The verdicts are
those of the session-9 code (kept here as the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.serve import answers
from mlwarden.serve.answers import CAP, WIDE, WORK, Answers, _cloud, steady
from mlwarden.serve.config import Similarity as SimilarityConfig
from mlwarden.serve.dilution import Dilution, _ring, sq_distances
from mlwarden.serve.monitor import Similarity
from mlwarden.serve.stationary import MIN_ROWS, TIGHT, _numbered


def _cloud_reference(pts, link):  # type: ignore[no-untyped-def]
    """Session 9's _cloud: a full distance matrix, then breadth first."""
    norms = np.einsum("ij,ij->i", pts, pts)
    adj = sq_distances(pts, norms, pts, norms) < link
    seen = np.zeros(len(pts), dtype=bool)
    seen[-1] = True
    front = seen.copy()
    while front.any():
        front = adj[front].any(axis=0) & ~seen
        seen |= front
    return seen


def _reference(sim, vs, cand, before, ans, old, spread):  # type: ignore[no-untyped-def]
    """Session 9's steady()."""
    hist, radius = _ring(sim)[2], sim.config.radius
    limit, link = radius * radius * vs.shape[1], (TIGHT * radius) ** 2 * vs.shape[1]
    parts = _numbered(sim, vs, before)
    known = [ans.take(parts[0][1]), old, ans.take(parts[2][1])]
    out = set()
    for j in cand:
        q, me = np.asarray(vs[j], dtype=np.float32), before.first + j
        rows, labels, scores, when = [], [], [], []
        for (part, gid), (lab, score) in zip(parts, known, strict=True):
            if len(part):
                diff = part - q
                near = (np.einsum("ij,ij->i", diff, diff) < limit) & (gid < me) & (gid >= me - hist)
                rows.append(part[near])
                labels.append(lab[near])
                scores.append(score[near])
                when.append(gid[near])
        ids = np.concatenate(when)
        newest = np.argsort(ids, kind="stable")[-CAP:]
        pts = np.concatenate([np.concatenate(rows)[newest], q[None]])
        lab_j, score_j = ans.take(np.array([me]))
        keep = _cloud_reference(pts, link)
        ball_labels = np.concatenate([np.concatenate(labels)[newest], lab_j])[keep]
        ball = np.concatenate([np.concatenate(scores)[newest], score_j])[keep]
        if len(ball) <= MIN_ROWS or lab_j[0] < 0 or (ball_labels != lab_j[0]).any():
            continue
        cloud = pts[keep]
        if np.sqrt(np.mean((cloud - cloud.mean(axis=0)) ** 2)) > answers.WIDE * radius:
            continue
        gaps = np.diff(np.r_[ids[newest][keep[:-1]], me][-answers.NEWEST - 1 :])
        if float(np.median(gaps)) * answers.APART < sim.config.window:
            continue
        if np.isnan(ball).any() or float(ball.max() - ball.min()) > spread:
            continue
        out.add(j)
    return out


def _stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loggers (20 rows re-read with noise, every 20 queries: quiet), a search whose
    log-odds move, rows that change class and rows without answers: every verdict."""
    rng = np.random.default_rng(seed)
    base = rng.random((20, 30))
    at, xs, labels, scores = rng.random(30), [], [], []
    for i in range(n):
        if i % 4 == 3:  # the search: small steps, log-odds falling
            at = at + (rng.random(30) < 0.1) * rng.choice([-0.004, 0.004], 30)
            xs.append(at + rng.normal(0, 0.002, 30))
            labels.append(0)
            scores.append(2.0 - 0.01 * i)
            continue
        r = i % 20
        xs.append(base[r] * (1 + rng.normal(0, 0.002, 30)))
        labels.append(r % 3 if rng.random() > 0.03 else -1)  # a few unknown answers
        scores.append(r * 0.1 + rng.normal(0, 0.05 + 0.4 * (r == 5)))
    lab = np.asarray(labels)
    return (np.asarray(xs, dtype=np.float32), lab,
            np.where(lab < 0, np.nan, np.asarray(scores)).astype(np.float32))  # fmt: skip


@pytest.mark.parametrize(("history", "batch"), [(200, 1), (400, 8), (400, 60)])
def test_steady_gives_the_full_matrix_verdicts(history: int, batch: int) -> None:
    xs, labels, scores = _stream(900, history + batch)
    sim = Similarity(SimilarityConfig(radius=0.05, history=history, window=history), 30)
    ans = Answers(history)
    quiet = stood = 0
    for i in range(0, len(xs), batch):
        vs = xs[i : i + batch]
        before = Dilution.snapshot(sim, len(vs))
        old = ans.take(before.ids)
        sim.observe_many(vs)
        ans.write(before.first, labels[i : i + batch], scores[i : i + batch], len(vs))
        cand = list(range(len(vs)))
        got = steady(sim, vs, cand, before, ans, old, 1.0)
        assert got == _reference(sim, vs, cand, before, ans, old, 1.0)
        quiet, stood = quiet + len(got), stood + len(vs) - len(got)
    assert quiet > 100 and stood > 100  # both verdicts, many times


def _chain(n: int, dims: int, seed: int) -> np.ndarray:
    """Rows on a sphere of radius 1.5 around the last row (the query), each 0.8 from the
    one before (links of 1): a chain as deep as it is long,
    plus a ball around the query and one row far from all."""
    rng = np.random.default_rng(seed)
    u, out = rng.normal(size=dims), []
    for _ in range(n):
        u = u / np.linalg.norm(u)
        out.append(1.5 * u)
        step = rng.normal(size=dims)
        step -= step @ u * u
        u = u + 0.6 * step / np.linalg.norm(step)
    bridge = 0.5 * out[0]  # links the chain's first row to the centre
    ball = rng.normal(0, 0.05, (n // 2, dims))
    far = np.full(dims, 5.0)  # linked to nothing
    return np.asarray([*out, *ball, far, bridge, np.zeros(dims)], dtype=np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_cloud_links_the_rows_the_full_matrix_links(seed: int) -> None:
    pts = _chain(60 + 40 * seed, 30, seed)
    link = 1.0
    want = _cloud_reference(pts, link)
    assert want[:12].all()  # the chain is linked, 12 levels deep and more
    got = _cloud(pts, link)
    assert got is not None and np.array_equal(got, want)
    ok = np.ones(len(pts), dtype=bool)
    ok[40] = False  # a row of another class on the chain: the query stands
    assert _cloud(pts, link, ok) is None
    ok[:] = True
    assert (~want).sum() == 1
    ok[~want] = False  # a row outside the cloud changes nothing
    got = _cloud(pts, link, ok)
    assert got is not None and np.array_equal(got, want)


def test_distances_a_candidate_grow_with_the_cloud_not_its_square() -> None:
    # the drifting search that cost 6.7-8.6 ms a query: one cloud of ~CAP rows a candidate
    rng = np.random.default_rng(0)
    at, xs = rng.random(30), []
    for _ in range(1600):
        at = at + (rng.random(30) < 0.05) * rng.choice([-0.002, 0.002], 30)
        xs.append(at + rng.normal(0, 0.002, 30))
    xs32 = np.asarray(xs, dtype=np.float32)
    sim = Similarity(SimilarityConfig(radius=0.05, history=1500, window=1000), 30)
    ans = Answers(1500)
    for i in range(0, len(xs32), 8):
        vs = xs32[i : i + 8]
        before = Dilution.snapshot(sim, len(vs))
        old = ans.take(before.ids)
        sim.observe_many(vs)
        ans.write(before.first, np.ones(len(vs), dtype=int), np.ones(len(vs), np.float32), len(vs))
        if i >= 1500:
            steady(sim, vs, list(range(len(vs))), before, ans, old, 1.0)
        else:
            WORK.update(clouds=0, distances=0)
    assert WORK["clouds"] == 96  # queries 1,505-1,600
    assert WORK["distances"] <= 2 * (CAP + 1) * WORK["clouds"]  # the full matrix: 256x that


def _too_wide(pts: np.ndarray, keep: np.ndarray, wide: float) -> bool:
    """The reference's width test on the cloud ``pts[keep]`` (``wide``: d (WIDE r)^2)."""
    cloud = pts[keep]
    return bool(np.mean((cloud - cloud.mean(axis=0)) ** 2) * cloud.shape[1] > wide)


@pytest.mark.parametrize("seed", range(3))
def test_a_chain_stands_within_a_bounded_number_of_levels(seed: int) -> None:
    # ~1,000 rows each linked only to the next: the full linkage (an n x n matrix) cost
    # ~15 ms a query; every row is ok, so only the width can end it early
    rows = _chain(1020, 30, seed)
    pts = np.concatenate([rows[:1020], rows[-2:]])  # the chain, its bridge, the query
    link, wide = 1.0, 1.0 * (WIDE / TIGHT) ** 2  # as steady sets them: (TIGHT r)^2 d, (WIDE r)^2 d
    want = _cloud_reference(pts, link)
    assert want.all() and _too_wide(pts, want, wide)  # all linked, and it stands: wide
    WORK.update(clouds=0, distances=0)
    assert _cloud(pts, link, np.ones(len(pts), dtype=bool), wide) is None
    # at most 2 n / 36 + 3 levels of one row against <= n rows each (the full matrix: n^2)
    assert WORK["distances"] <= (2 * len(pts) / 36 + 3) * len(pts)
    assert _cloud(pts, link) is not None  # without the width stop: the whole chain


def _mixed(rng: np.random.Generator) -> np.ndarray:
    """A ball of noisy rows around the query with a chain of a few rows leading off it and
    rows apart: narrow and wide clouds, shallow and deep."""
    ball = rng.normal(0, rng.uniform(0.01, 0.04), (int(rng.integers(100, 700)), 30))
    steps, at = [], np.zeros(30)
    for _ in range(int(rng.integers(0, 12))):
        at = at + rng.normal(0, 0.11, 30)
        steps.append(at.copy())
    apart = rng.normal(0, 2.0, (int(rng.integers(0, 600)), 30))
    rows = [*ball, *steps, *apart]
    rng.shuffle(rows)
    return np.asarray([*rows, np.zeros(30)], dtype=np.float32)


def test_the_width_stop_keeps_every_verdict_of_the_full_linkage() -> None:
    rng = np.random.default_rng(7)
    link, wide = 1.0, (WIDE / TIGHT) ** 2
    kinds = {"quiet": 0, "stopped": 0, "wide": 0}
    for _ in range(60):
        pts = _mixed(rng)
        want = _cloud_reference(pts, link)
        got = _cloud(pts, link, np.ones(len(pts), dtype=bool), wide)
        if got is None:  # stopped early: the full cloud fails the width test
            assert _too_wide(pts, want, wide)
            kinds["stopped"] += 1
            continue
        assert np.array_equal(got, want)
        kinds["wide" if _too_wide(pts, want, wide) else "quiet"] += 1
    assert min(kinds.values()) >= 5, kinds  # every outcome, several times
