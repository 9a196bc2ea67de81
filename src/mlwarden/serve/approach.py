"""Alerts on a key's queries near one input whose answers walk toward the boundary.

Every search's goal is to move the model's answer: a score-based search (random search,
Square, NES) keeps a step when its true class's score falls, and is done when another
class wins; a decision-based one walks toward the boundary from the other side. Shaping
its noise (into a few directions, blocks, smooth fields, the data's principal axes) or
diluting it among benign queries dodges the rules that measure *where* a key's queries
are; it does not change what the search must do to the *answers* of the queries near
its input. A still input resent with fresh noise (a camera in low light, a sensor row)
gets answers that scatter about one level in any order.

The rule, per query of a key with ``min_rows`` or more neighbours among its earlier
queries (the rows the similarity history found within its radius for the query's own
counts, :meth:`mlwarden.serve.monitor.Similarity.neighbours`: no second scan), the
newest ``CAP`` of them and the query, in query order: each row's value is the log-odds
of the oldest answered row's class (where the search started; the answers ring
:class:`mlwarden.serve.answers.Answers`, read only), a row answered with another class
ranked below every row of that class (it is what a search is after). Spearman's rank
correlation of the values with their order as a z score (``rho sqrt(n - 1)``, ties at
their average rank), shrunk for autocorrelation (below); the query is flagged when
``|z| >= bar`` (5 by default: about one in 1.7 million for a still input's answers in
random order). The test compares the trend with the neighbourhood's own scatter
(ranks), so it needs no scale.

Rows without a recorded answer (a caller that passed no scores; rows restored from a
blob of before session 10) are left out: the rule judges only answered rows, and a
query without an answer is not judged. Rows of bits (text) have no distances kept:
not judged.

Two-sided: on a two-class model the start may already be past the boundary (the
search then raises the start's class), and a targeted search raises its target's; a
benign stream has no direction either way. A random walk (a row edited step by step)
trends in rank as far as a search, but its ranks are autocorrelated: the z is shrunk by
the ranks' lag-1 autocorrelation about their line (:func:`walked`).

Off by default (``detection.approach.enabled``): at the noise an adaptive search learns
(OARS on a gateway of its own) its queries leave the similarity radius or its answers
scatter like a resend's, and the searches whose answers do fall are flagged first by
the rules already there (docs/benchmarks/gateway.md, issue 26b).

State: none of its own, so nothing to persist: the answers ring (14 bytes a similarity
history row, made on every key while the rule is on, in the key's blob with the
history) and the neighbours the history's counts found for the batch just counted
(``Similarity.keep``; dropped once read).

Cost: none for a query with fewer than ``min_rows`` neighbours (distinct traffic) but
the ring's write (about 2.5 us a query in all); a query near others pays the gather of
its newest ``CAP`` neighbours' answers and a ranking (30-76 us, 20-1,000 rows).
"""

from __future__ import annotations

import math

import numpy as np

from mlwarden.serve.answers import CLIP, Answers

CAP = 1023  # the newest neighbours a query's trend is measured over
OTHER = -1e6  # a row of another class: below every log-odds value (|log-odds| < 14)


def scores_of(probs: np.ndarray, labels: np.ndarray) -> list[float]:
    """:func:`mlwarden.serve.answers.log_odds` of a request's rows as Python floats, row
    by row (a request holds one row or a few: numpy's calls cost more than the sums)."""
    out = []
    for row, label in zip(np.asarray(probs).tolist(), np.asarray(labels).tolist(), strict=True):
        p = min(max(float(row[int(label)]), CLIP), 1 - CLIP)
        out.append(math.log(p) - math.log1p(-p))
    return out


def ranks(v: np.ndarray) -> np.ndarray:
    """Ranks of ``v`` from 1, ties at their average rank."""
    uniq, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
    top = np.cumsum(counts)
    return ((top - (counts - 1) / 2.0)[inv]).astype(np.float64)


def trend(values: np.ndarray) -> tuple[float, float]:
    """(z, lag-1 autocorrelation): Spearman's rank correlation of ``values`` with their
    order as a z score (``rho sqrt(n - 1)``: negative when they fall) and the lag-1
    autocorrelation of the ranks about their fitted line; (0, 0) for fewer than 4
    values or all tied."""
    n = len(values)
    if n < 4:
        return 0.0, 0.0
    r = ranks(np.asarray(values)) - (n + 1) / 2.0
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    rr, tt = float(r @ r), float(t @ t)
    if rr <= 0:
        return 0.0, 0.0
    rho = float(r @ t) / math.sqrt(rr * tt)
    e = r - (float(r @ t) / tt) * t  # the ranks about their line
    ee = float(e @ e)
    r1 = float(e[1:] @ e[:-1]) / ee if ee > 0 else 0.0
    return rho * math.sqrt(n - 1), r1


def walked(values: np.ndarray) -> float:
    """:func:`trend`'s z, shrunk by the ranks' lag-1 autocorrelation ``r1`` when positive
    (``z sqrt((1 - r1) / (1 + r1))``: an AR(1) series' effective number of values, the
    variance correction of trend tests on autocorrelated data, Hamed & Rao 1998): a
    random walk's answers (a benign row edited step by step) fall or rise as far as a
    search's in rank, but each value is its predecessor's plus a step."""
    z, r1 = trend(values)
    return z * math.sqrt((1 - r1) / (1 + r1)) if r1 > 0 else z


def series(labels: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
    """The values :func:`trend` reads: answered rows only, the log-odds of the oldest
    answered row's class (where the search started), another class's rows at
    ``OTHER``; None: no row answered."""
    known = (labels >= 0) & ~np.isnan(scores)
    if not known.any():
        return None
    lab, sc = labels[known], scores[known]
    return np.where(lab == lab[0], sc, OTHER)


def approach(sim: object, ans: Answers, counts: np.ndarray, first: int, bar: float,
             min_rows: int) -> list[int]:  # fmt: skip
    """Positions of the batch just counted by ``sim`` (its queries numbered from
    ``first``, their answers in ``ans``; ``counts``: each one's neighbours as counted)
    whose neighbourhood's answers fall over query order (module docstring)."""
    out = []
    for j in np.flatnonzero(np.asarray(counts) >= min_rows).tolist():
        ids = sim.neighbours(j)  # type: ignore[attr-defined]
        if ids is None or len(ids) < min_rows:
            continue
        ids = np.append(ids[-CAP:], first + j)
        labels, scores = ans.take(ids)
        if labels[-1] < 0 or np.isnan(scores[-1]):
            continue  # the query has no answer: not judged
        values = series(labels, scores)
        if values is None or len(values) <= min_rows:
            continue
        if abs(walked(values)) >= bar:
            out.append(j)
    sim.near = None  # type: ignore[attr-defined]  # read: not held until the next batch
    return out
