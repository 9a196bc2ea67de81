"""A ball of neighbours that stays put: one input resent with fresh noise, not a search.

A benign client that resends one input many times, each time with fresh small noise,
and a noisy random search both put many queries of a key within the similarity radius
of each other; counts cannot tell them apart. What can is *time*: resends are draws
around a fixed centre, independent of when they were sent, while a search steps from
its last accepted point, so its centre drifts, query after query (Square, NES, boundary
attacks; each accepted step stays in the next query). On audio this was the one benign
stream left above 1 false alarm per 1,000: whole-second windows resent with noise of sd
0.02, whose ~5% silent windows all become the same hiss, resent ~470 times in 10,000
queries (46.6 per 1,000, ``benchmarks/gateway_detection_long.py``).

The test, on a flagged query's neighbours within the radius (among the queries it saw,
in the order they came, itself last; the newest ``CAP``): split them into the older
and the newer half and compare the two means with Bai & Saranadasa's high-dimensional
two-sample statistic (Bai & Saranadasa, "Effect of high dimension: by an example of a
two sample problem", Statistica Sinica 6, 1996)::

    M = |mean(newer) - mean(older)|^2,   E[M] = tau tr(S),   Var[M] = 2 tau^2 tr(S^2)

under independent draws with covariance ``S`` (``tau = 1/n1 + 1/n2``), with ``M``
referred to Box's scaled chi-square (Box, "Some theorems on quadratic forms applied in
the study of analysis of variance problems", Ann. Math. Statist. 25, 1954): ``M / (tau
c) ~ chi2(f)``, ``c = tr(S^2) / tr(S)``, ``f = tr(S)^2 / tr(S^2)``. ``tr(S)`` and
``tr(S^2)`` come from successive differences ``d_i = x_(i+1) - x_i`` (von Neumann, "Distribution
of the ratio of the mean square successive difference to the variance", Ann. Math.
Statist. 12, 1941): ``E|d_i|^2 = 2 tr(S)`` and, for non-adjacent ``i, j``, ``E(d_i .
d_j)^2 = 4 tr(S^2)``. A drifting centre inflates the spread of the whole cluster but
hardly the successive differences, so the test keeps its power where it matters. The
ball is *moving* (a search) when the chi-square p-value is below ``ALPHA``.

Measured on real speech (``benchmarks/gateway_detection_long.py``, audio, calibrated
radius 0.035): the hiss of the noisy resends never went below p = 10^-2.2 (466 tested
queries); the similarity detector's first flag of the sigma 0 / 0.01 / 0.05 searches of
300 queries came at the same query in 10 of 15 runs and 1-48 queries later in the others
(a search whose noise hides its first steps). On independent Gaussian rows (20,000
balls each) p fell below ``ALPHA`` in none of 128 dimensions and 2 in 10,000 of 4
dimensions at 21 rows (the trace estimates are noisy there), none at 100 rows.

What it cannot see: a search whose centre, over its last ``CAP`` neighbours, moves less
than about the noise's spread divided by the square root of their number (it then gains
correspondingly little per query), and a search that samples 20 or more queries around
one point before jumping farther than the radius (each ball is still; NES-style
estimates with large steps). Both stay bounded by the query budget; the second is
visible to the similarity detector's count while its balls overlap.

Example::

    rows = base + rng.normal(0, 0.01, (40, 128))   # one input resent with noise, in order
    moving(rows)                                   # False: a still ball
    moving(base + np.linspace(0, 0.05, 40)[:, None] + rng.normal(0, 0.01, (40, 128)))  # True
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from mlwarden.serve.dilution import Snapshot, _ring

ALPHA = 1e-5  # p-value below which the ball's centre has moved (a search)
CAP = 256  # newest neighbours tested: a search is judged on its recent path


def drift_p(rows: np.ndarray) -> float:
    """The p-value that ``rows`` (n, dims), in time order, are draws around one fixed
    centre, against a centre that moved between their older and newer half (the
    statistic of this module). 0.0 when the rows cannot be tested (fewer than 4, or
    successive differences without spread): such a ball counts as moving (fails closed).

    Example::

        drift_p(np.random.default_rng(0).normal(size=(50, 64)))   # about uniform on [0, 1]
    """
    x = np.asarray(rows, dtype=np.float64)[-CAP:]
    n = len(x)
    if n < 4:
        return 0.0
    h = n // 2
    gap = x[h:].mean(axis=0) - x[:h].mean(axis=0)
    tau = 1.0 / h + 1.0 / (n - h)
    d = np.diff(x, axis=0)
    tr1 = float(np.einsum("ij,ij->", d, d)) / (2 * (n - 1))  # estimates tr(S)
    gram = d @ d.T
    far = np.abs(np.subtract.outer(np.arange(n - 1), np.arange(n - 1))) >= 2
    tr2 = float(np.mean(gram[far] ** 2)) / 4  # estimates tr(S^2): independent pairs only
    if tr1 <= 0 or tr2 <= 0:
        return 0.0
    scale, dof = tr2 / tr1, tr1 * tr1 / tr2
    return float(stats.chi2.sf(float(gap @ gap) / (tau * scale), dof))


def moving(rows: np.ndarray) -> bool:
    """Whether the ball ``rows`` (n, dims), in time order, drifts: ``drift_p < ALPHA``."""
    return drift_p(rows) < ALPHA


def still(sim: object, vs: np.ndarray, cand: list[int], before: Snapshot) -> set[int]:
    """The positions of ``cand`` (in a batch ``vs`` just added to the similarity history
    ``sim``) whose ball of neighbours does not move: their alerts are resends.

    Query ``j`` is judged on what it saw alone (the history before the batch, within
    ``history`` queries of it, and the batch's queries before it), so a batch gives the
    verdicts of one query at a time. Radius: ``sim.config.radius``.
    """
    if not cand:
        return set()
    hist = _ring(sim)[2]
    radius = sim.config.radius  # type: ignore[attr-defined]
    limit = radius * radius * vs.shape[1]
    parts = [(r, g) for r, g in _numbered(sim, vs, before) if len(r)]
    out = set()
    for j in cand:
        q, me = np.asarray(vs[j], dtype=np.float32), before.first + j
        rows, when = [], []
        for part, gid in parts:
            # one query at a time: the same arithmetic whatever the batch (alerts match)
            diff = part - q
            close = np.einsum("ij,ij->i", diff, diff) < limit
            close &= (gid < me) & (gid >= me - hist)
            rows.append(part[close])
            when.append(gid[close])
        order = np.argsort(np.concatenate(when), kind="stable")
        if not moving(np.concatenate([np.concatenate(rows)[order], q[None]])):
            out.add(j)
    return out


def _numbered(sim: object, vs: np.ndarray, before: Snapshot) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, global query numbers) a query of the batch ``vs`` just added to ``sim`` may
    see: the history kept from before the batch, the rows the batch overwrote, and the
    batch itself (callers mask by number: ``history`` back, and earlier than the query)."""
    ring, _, hist, nxt, filled = _ring(sim)
    slots = np.arange(filled)
    ids = nxt - 1 - (nxt - 1 - slots) % hist  # slot s was written last by query ids[s]
    old = ids < before.first  # the batch's own rows are taken from ``vs``
    batch = before.first + np.arange(len(vs))
    return [(ring[:filled][old], ids[old]), (before.rows, before.ids),
            (np.asarray(vs, dtype=np.float32), batch)]  # fmt: skip
