"""Alerts on a cloud whose answers stay put: rows that drift, not a search.

A search drives the answers it attacks: a score-based search (Square, NES, random search)
keeps a step when the true class's probability drops, and is done when another class
wins; a decision-based one (Boundary, HopSkipJump) walks from an input of another class
toward its target. Benign rows that drift keep their answers and stay where they are: a
sensor logger re-read every hour, each value x (1 + N(0, 0.002)) with a daily cycle of
+-1% (``benchmarks/gateway_detection_outside.py``) moves its cloud, so the still-ball
rule (:mod:`mlwarden.serve.stationary`) lets its dilution and similarity alerts stand
(616-660 per 1,000 on every table, session 8), while over 60 readings the logistic
model's log-odds of a logger's class spread 0.13-0.45 and 149 of 150 loggers keep
their class.

The rule, per query whose similarity, dilution or residual alert stands after the
still-ball rule: its *cloud* is the earlier queries it saw within the similarity radius
``r`` (the newest ``CAP``) joined to it by a chain of links shorter than ``TIGHT * r``
(the still-ball rule's own cloud: farther jumps are that rule's blind spot already).
The alert drops when the cloud holds more than ``MIN_ROWS`` earlier rows, every one
was answered with the query's own class, the log-odds of that class, ``log p - log(1 -
p)`` (``p`` clipped to ``[CLIP, 1 - CLIP]``), spread no more than ``answers.spread``
(``SPREAD`` = 1.0 from ``gateway calibrate``) over the cloud and the query, and the
cloud is narrow: its rows' RMS distance per value from their mean is at most ``WIDE`` (0.1)
of ``r``, and its rows came spread out in time: the median gap between its newest
``NEWEST`` (20) rows and the query is at least ``window / APART`` queries of the key (25
at a window of 1,000: its 20 newest rows span half a window; a logger's rows come every
50, a nightly rescoring's every 89). A row without a
recorded answer (a caller that passed none, rows from before a restart) fails closed:
the alert stands.

What a search gets under it:

* a score-based search: at most ``spread`` log-odds of its class within any such cloud;
  a step past that widens the spread of its own cloud and the alert stands (the searches
  of ``tests/serve/test_serve_answers.py``, steps 0.05 and 0.005);
* a decision-based search: its answers keep one class, but its walk widens the cloud; it
  stands once the cloud is wider than ``WIDE * r`` (a straight walk of about 0.35 r),
  and from the start unless it spaces its queries out in time (Boundary and
  HopSkipJump on wine, ``gateway_detection_heldout.py``: flagged at the queries they were
  before the rule, plain and diluted 1:10);
* a change of class is never excused: it is what a search is after. A benign row on the
  decision boundary (a logger whose class changes with the daily cycle) fails closed;
* padding a cloud with copies of its start does not hide a move: the copies carry the
  start's answers and widen the spread (exact repeats never reach the detectors);
* a search diluted to one query in 25 or fewer of the key's gains at most the above
  before its alert stands: ``spread`` log-odds, or ``WIDE * r`` of travel; one less
  diluted (ZOO in ``gateway_detection_heldout.py`` at 1:10, its probes among augmented
  copies of its target with the same answers) stands from the start.

State: one class (int16), one log-odds value (float32) and the query's number (int64)
per similarity history row, in a ring with the history's slots (``query number %
history``): 14 bytes a row, 140 kB a key at the default history, persisted with the
similarity history (:meth:`Answers.dump`; a blob from before session 10 has none: after
such a restart the rows from before it have no answers, and alerts on clouds of them stand).
Cost: per alert that would stand, none otherwise: the batch's candidates against the
history in one product a part (``stationary._Seen``: distances within float32 rounding
of the radius computed again as ``r - q``, every comparison the one a pass of ``r - q``
makes), and the cloud's single linkage from the query, level by level, each level's new
rows against the rows not yet reached (a ball: the query against its at most ``CAP``
rows, then its neighbours against the few left). The linkage stops at the first row of
another class, without an answer, or more than ``spread`` log-odds from the query's, and
once the rows reached are too wide for any cloud of the ball's rows to pass the width
test (their sum of squared distances from their mean, which only grows as rows join,
above ``d (WIDE r)^2`` times the rows that could join): the alert stands then, as the
full cloud's checks would say. That bounds a chain: two levels apart its rows are a link
(``TIGHT r``) apart or more, so a chain of ``m`` levels holds a sum of at least ``(m - 1)
(m - 2) / 2m`` squared links, and with ``(TIGHT / WIDE)^2`` = 36 it stops within about
``2 n / 36`` levels of a ball of ``n`` rows (61 at 1,024; a chain of 1,020 rows cost 13 ms
a candidate in the full linkage of session 10, about 1 ms now, issue 24f). The dearest
shape left is two tight clusters a link apart: one product of the first level's rows
with the rest (about ``CAP^2 / 4`` distances), then the stop. In all a linkage measures
each pair of rows at most once (``n^2 / 2``, half the session-9 matrix) and a level of
a few rows against at most ``n``.

Example::

    ans = Answers(10_000)
    old = ans.take(before.ids)               # before similarity.observe_many overwrites
    ans.write(before.first, labels, log_odds(probs, labels), len(labels))
    quiet = steady(sim, pvs, cand, before, ans, old, 1.0)   # positions whose alert drops
"""

from __future__ import annotations

import numpy as np

from mlwarden.serve.dilution import Snapshot, _ring, sq_distances
from mlwarden.serve.stationary import MIN_ROWS, TIGHT, _Seen, _timeline

CLIP = 1e-6  # probabilities are clipped to [CLIP, 1 - CLIP]: log-odds within +-13.8
CAP = 1023  # the newest neighbours within the radius a cloud is taken from
SPREAD = 1.0  # the log-odds spread gateway calibrate sets on tabular rows
WIDE = 0.1  # a cloud wider than this (RMS per value about its mean, of the radius) stands
NEWEST, APART = 20, 40  # its newest 20 rows' median gap must be window / 40 queries or more
SLACK = 1.01  # the width stop waits for 1% more than the width test (float32 rounding)
SMALL = 128  # a cloud of this many rows or fewer is linked at once (one small matrix)
# distances the linkage computed, over clouds linked (tests read it: work, not time)
WORK = {"clouds": 0, "distances": 0}


def log_odds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The log-odds of each row's ``labels`` class in ``probs`` (N, classes), float32."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    p = np.clip(p, CLIP, 1 - CLIP)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


class Answers:
    """One key's answers (class and log-odds) per similarity history slot.

    Args:
        history: the similarity history's length (``similarity.history``).
    """

    def __init__(self, history: int) -> None:
        self.labels = np.full(history, -1, dtype=np.int16)
        self.scores = np.full(history, np.nan, dtype=np.float32)
        self.ids = np.full(history, -1, dtype=np.int64)  # the query each slot holds

    def take(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(classes, log-odds) of queries ``ids`` (-1 / NaN where not held)."""
        ids = np.asarray(ids, dtype=np.int64)
        slots = ids % len(self.ids)
        held = self.ids[slots] == ids
        return (np.where(held, self.labels[slots], -1),
                np.where(held, self.scores[slots], np.nan))  # fmt: skip

    def write(self, first: int, labels: np.ndarray | None, scores: np.ndarray | None,
              count: int) -> None:  # fmt: skip
        """Record ``count`` queries numbered from ``first`` (no answers: unknown)."""
        ids = first + np.arange(count)
        slots = ids % len(self.ids)
        self.ids[slots] = ids
        self.labels[slots] = -1 if labels is None else labels
        self.scores[slots] = np.nan if scores is None else scores

    def nbytes(self) -> int:
        return self.labels.nbytes + self.scores.nbytes + self.ids.nbytes

    def dump(self) -> dict[str, np.ndarray]:
        """The ring's classes, log-odds and query numbers (14 bytes a slot)."""
        return {"labels": self.labels, "scores": self.scores, "ids": self.ids}

    def load(self, state: dict[str, np.ndarray], shift: int) -> bool:
        """Take back :meth:`dump`'s arrays, each query number less ``shift`` (the
        similarity history renumbers its queries after a restart by a multiple of its
        length, so every slot keeps its row). False, nothing changed: arrays of another
        length (the history's length changed: rows from before have no answers)."""
        labels, scores, ids = (np.asarray(state[k]) for k in ("labels", "scores", "ids"))
        n = len(self.ids)
        if not (len(labels) == len(scores) == len(ids) == n) or shift % n:
            return False
        self.labels[:] = labels
        self.scores[:] = scores
        self.ids[:] = np.where(ids >= 0, ids - shift, -1)
        return True


def steady(sim: object, vs: np.ndarray, cand: list[int], before: Snapshot, ans: Answers,
           old: tuple[np.ndarray, np.ndarray], spread: float) -> set[int]:  # fmt: skip
    """Positions of ``cand`` (in a batch ``vs`` just added to the similarity history
    ``sim``, its answers to ``ans``) whose cloud kept its answers (module docstring).

    ``old``: :meth:`Answers.take` of ``before.ids`` before the batch was written (the
    answers of the rows it overwrote). Query ``j`` is judged on what it saw alone.
    """
    if not cand:
        return set()
    hist = _ring(sim)[2]
    radius = sim.config.radius  # type: ignore[attr-defined]
    limit = radius * radius * vs.shape[1]
    link = (TIGHT * radius) ** 2 * vs.shape[1]
    qs = np.asarray(vs, dtype=np.float32)[cand]
    # every candidate's distances to the rows it may see: one product a part of the
    # history, those near the radius computed again as ``r - q`` (stationary's _Seen)
    seen, gone = _Seen(_timeline(sim, vs, before), qs, (limit,)), len(before.ids)
    out = set()
    for c, j in enumerate(cand):
        q, me = qs[c], before.first + j
        lab_j, score_j = ans.take(np.array([me]))
        if lab_j[0] < 0 or np.isnan(score_j[0]):
            continue  # no answer recorded for the query: it stands (fails closed)
        pos = seen.balls(c, me, hist)[0][-CAP:]  # the newest CAP in the radius, oldest first
        ids = seen.ids[pos]
        labels, scores = ans.take(ids)
        was = pos < gone  # rows the batch overwrote (the timeline's first part): their
        labels[was], scores[was] = old[0][pos[was]], old[1][pos[was]]  # answers from before
        pts = np.concatenate([seen._rows(pos), q[None]])
        ball_labels = np.concatenate([labels, lab_j])
        ball = np.concatenate([scores, score_j])
        # a row of another class, without an answer or outside spread of the query's
        # log-odds makes the query stand once the cloud reaches it (exactly as the
        # checks below would): the linkage stops there
        ok = (ball_labels == lab_j[0]) & (np.abs(ball - score_j[0]) <= spread)
        keep = _cloud(pts, link, ok, (WIDE * radius) ** 2 * vs.shape[1])
        if keep is not None and _quiet(pts, keep, ids, me, ball_labels[keep],
                                       ball[keep], (radius, sim.config.window, spread)):  # type: ignore[attr-defined]  # fmt: skip
            out.add(j)
    return out


def _quiet(pts: np.ndarray, keep: np.ndarray, ids: np.ndarray, me: int, ball_labels: np.ndarray,
           ball: np.ndarray, scale: tuple[float, int, float]) -> bool:  # fmt: skip
    """Whether the cloud ``pts[keep]`` (its last row the query ``me``; ``ids``: the
    numbers of the other rows) lets the query's alert drop (module docstring)."""
    radius, window, spread = scale
    if len(ball) <= MIN_ROWS or (ball_labels != ball_labels[-1]).any():
        return False  # too few rows to judge, or another class among them: it stands
    cloud = pts[keep]
    if np.sqrt(np.mean((cloud - cloud.mean(axis=0)) ** 2)) > WIDE * radius:
        return False  # a cloud as wide as a walk across the radius: it stands
    gaps = np.diff(np.r_[ids[keep[:-1]], me][-NEWEST - 1 :])  # in queries
    if float(np.median(gaps)) * APART < window:
        return False  # its newest rows came closer together than 1 in window / APART
    return not (np.isnan(ball).any() or float(ball.max() - ball.min()) > spread)


def _cloud(pts: np.ndarray, link: float, ok: np.ndarray | None = None,
           wide: float | None = None) -> np.ndarray | None:  # fmt: skip
    """Mask of the rows of ``pts`` joined to its last row by a chain of rows each less
    than ``sqrt(link)`` from the next (single linkage, breadth first); None when it
    reaches a row where ``ok`` is False, or (``wide`` given) once the rows reached are
    too wide for the cloud to pass :func:`_quiet`'s width test (:class:`_Width`).

    Distances are computed only from each level's new rows to the rows not yet reached
    (a ball: the query's row to all, then its neighbours to the few left, O(n) rows of
    work, not n^2); a cloud of ``SMALL`` rows or fewer takes one matrix (:func:`_small`).
    A chain is as many levels deep as it is long, but its rows are at least a link apart
    two levels from each other: the width stop ends it within about ``2 n / 36`` levels
    (n rows; module docstring, "Cost")."""
    WORK["clouds"] += 1
    width = _Width(pts, ok, wide)
    if len(pts) <= SMALL:
        return _small(pts, link, ok, width)
    norms = np.einsum("ij,ij->i", pts, pts)
    seen = np.zeros(len(pts), dtype=bool)
    seen[-1] = True
    front = np.array([len(pts) - 1])
    left = len(pts) - 1
    while len(front) and left:
        if len(front) > 16 or 2 * left < len(pts):  # the rows left, gathered
            rest = np.flatnonzero(~seen)
            d2 = sq_distances(pts[front], norms[front], pts[rest], norms[rest])
            front = rest[(d2 < link).any(axis=0)]
        else:  # a few rows against most: against all in place (no copy), the seen masked
            d2 = sq_distances(pts[front], norms[front], pts, norms)
            front = np.flatnonzero((d2 < link).any(axis=0) & ~seen)
        WORK["distances"] += d2.size
        if (ok is not None and not ok[front].all()) or width.add(pts[front]):
            return None
        seen[front] = True
        left -= len(front)
    return seen


class _Width:
    """The rows a linkage has reached, summed to tell when no cloud holding them can
    pass the width test: their sum of squared distances from their own mean (SSD) only
    grows as rows join, and the test fails once the cloud's SSD exceeds ``wide`` (``d
    (WIDE r)^2``) times its rows, at most the ``ok`` rows of ``pts`` (a row not ``ok``
    ends the linkage). So when the rows reached exceed that (by ``SLACK``, for float32
    rounding) the alert stands either way: the verdict is the full linkage's."""

    def __init__(self, pts: np.ndarray, ok: np.ndarray | None, wide: float | None) -> None:
        rows = len(pts) if ok is None else int(ok.sum())
        self.limit = None if wide is None else SLACK * wide * rows
        q = pts[-1].astype(np.float64)
        self.n, self.sums, self.squares = 1, q.copy(), float(q @ q)

    def add(self, rows: np.ndarray) -> bool:
        """Count ``rows`` in; True when the rows counted are too wide."""
        if self.limit is None or not len(rows):
            return False
        r = rows.astype(np.float64)
        self.n += len(r)
        self.sums += r.sum(axis=0)
        self.squares += float(np.einsum("ij,ij->", r, r))
        return self.squares - float(self.sums @ self.sums) / self.n > self.limit


def _small(pts: np.ndarray, link: float, ok: np.ndarray | None, width: _Width) -> np.ndarray | None:
    """:func:`_cloud` of a few rows: one distance matrix, then breadth first."""
    norms = np.einsum("ij,ij->i", pts, pts)
    adj = sq_distances(pts, norms, pts, norms) < link
    WORK["distances"] += adj.size
    seen = np.zeros(len(pts), dtype=bool)
    seen[-1] = True
    front = seen.copy()
    while front.any():
        front = adj[front].any(axis=0) & ~seen
        if (ok is not None and not ok[front].all()) or width.add(pts[front]):
            return None
        seen |= front
    return seen
