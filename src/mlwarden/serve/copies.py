"""A small table re-read is a few inputs, not a search: a similarity count of distinct inputs.

The similarity rule (:class:`~mlwarden.serve.monitor.Similarity`) counts a query's
neighbours within the radius among the key's last ``window`` queries. On a table of a
few hundred rows that a benign client reads again and again (a sensor logger re-reading
its rows, a client drawing them with replacement plus small noise), a row in a dense
part of the table has a dozen natural neighbours within the radius, and every pass
over the table adds one copy of each: after three or four passes the count reaches
``min_neighbours`` (scikit-learn's diabetes table, 211 rows, calibrated radius 0.1 and
40 neighbours: 5 false alarms per 1,000 distinct-then-re-read queries and 3 with
replacement plus N(0, 0.01): redteam14, session 14). The still-ball rule does not
excuse them: a query's own cloud holds its row's two or three copies against its forty
neighbours of other rows (a ball of several resent inputs, which it leaves standing).

On tables (1-D rows), an alert of the window's count stands only when the neighbours
hold ``min_neighbours`` *distinct inputs*: neighbours taken in the order they came,
each one a copy (not counted) when it lies within ``COPY`` of the radius of an input
already counted (greedy leaders, Hartigan's leader clustering), so a walk counts one
input each ``COPY`` radii it moves. A re-read's copies (the logger's 0.003 relative
drift: ~0.002 RMS per value; N(0, 0.01) redrawn: 0.014) lie well within ``COPY``
(0.3, 0.03 at the diabetes radius) of their row; a noisy search's queries lie
``sigma * sqrt(2)`` apart plus its steps (0.07 at sigma 0.05), and its candidates
differ from each other by whole steps: each is an input of its own. The whole
history's alert (``long_neighbours``) is judged the same way on the whole history.

What this cannot see: a search whose queries all stay within ``COPY`` radii of a few
points (steps and noise both under ~0.03 RMS per value at the diabetes radius): it
counts as few inputs. Its figures are in docs/benchmarks/gateway.md (session 15, i28c).
Cost: only on alerts, after the still-ball rule: a pass over the window (``window x
dims``) and one over the neighbours a leader, at most ``min_neighbours`` of them.
"""

from __future__ import annotations

import numpy as np

from mlwarden.serve.dilution import sq_distances

COPY = 0.3  # a copy lies within this fraction of the radius of an input counted before it
_PAIRS = 256  # up to this many neighbours, all pairs are compared at once


def leaders(near: np.ndarray, copy2: float, need: int) -> int:
    """Distinct inputs among ``near`` (rows, oldest first): greedy leaders, a row within
    squared distance ``copy2`` (sum over values) of a leader before it being its copy;
    counting stops at ``need``. One pass over ``near`` a leader: the next leader is the
    first row no leader so far covers (every row before it is covered)."""
    near = np.asarray(near, dtype=np.float32)
    norms = np.einsum("ij,ij->i", near, near)
    # a few hundred rows (a benign alert's neighbours): every pair's verdict at once
    pairs = sq_distances(near, norms, near, norms) < copy2 if len(near) <= _PAIRS else None
    covered = np.zeros(len(near), dtype=bool)
    count, i = 0, 0
    while count < need:
        count += 1
        covered |= (
            pairs[i] if pairs is not None else norms + norms[i] - 2.0 * (near @ near[i]) < copy2
        )
        rest = np.flatnonzero(~covered[i + 1 :])
        if not len(rest):
            break
        i += 1 + int(rest[0])
    return count


def distinct(ring: np.ndarray, norms: np.ndarray, slots: np.ndarray, v: np.ndarray,
             limit: float, need: int) -> int:  # fmt: skip
    """Distinct inputs (:func:`leaders` at ``COPY`` of the radius, up to ``need``) among
    the history rows in ``slots`` (oldest first) within squared distance ``limit`` (the
    similarity rule's, summed over values) of ``v``."""
    rows = ring[slots]
    d2 = norms[slots] + float(v @ v) - 2.0 * (rows @ v)
    near = rows[d2 < limit]
    if len(near) < need:
        return len(near)
    return leaders(near, limit * COPY**2, need)


def window_slots(first: int, j: int, span: int, nxt: int, hist: int) -> np.ndarray:
    """Ring slots of the ``span`` queries before query ``first + j`` (a batch's query
    ``j``, the batch's first numbered ``first``) still in a ring of ``hist`` whose next
    query is ``nxt``, oldest first."""
    lo = max(0, first + j - span, nxt - hist)
    return np.arange(lo, first + j) % hist
