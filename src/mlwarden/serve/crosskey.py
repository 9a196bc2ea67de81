"""One search spread over several keys (Sybil accounts): a gateway-wide view of recent queries.

Every other detector is per key (:class:`~mlwarden.serve.monitor.Monitor` holds one
history per key), and Blacklight's own paper (Li et al., USENIX Security 2022) names
Sybil accounts as what defeats per-account detection: a search that sends its
steps round robin over 4 keys shows each key a quarter of its queries, so each key's
count of neighbours fills 4 times slower (``keys4`` of
``benchmarks/gateway_detection_outside.py``: flagged at 70-185 queries, with a wrong
answer already in hand on images, tables and text).

Two rings for the whole gateway, not per key, of the reduced vectors the similarity
detector measures (the same :func:`~mlwarden.serve.monitor.reduce`, projection and
radius), with the key and arrival of each:

* the *window*: the last ``window`` (1,000) distinct queries of all keys, counted with
  the similarity detector's own sketch scan (one more scan of ``window`` rows a query);
* the *kept* ring: the last ``kept`` (2,000) queries that had a neighbour in the window
  when they came, and those neighbours. Distinct benign traffic rarely has one, so a
  search's steps stay here while other keys' traffic runs through the window: on a busy
  gateway (i22e's ``busy4``: 100 other users' queries between two steps) the window
  holds a handful of a search's steps, this ring all of them.

A query with a neighbour in the window is judged on its *ball*: its earlier neighbours
within the radius in the kept ring, in arrival order. The query of key ``K`` is flagged
(alert ``crosskey``) when the ball holds ``min_neighbours`` (default:
``similarity.min_neighbours``) *distinct* vectors (many users sending the same popular
input byte for byte are one point) from at least ``min_keys`` keys with ``K``, the
query's own cloud (the ball's vectors within :data:`~mlwarden.serve.stationary.TIGHT`
of the radius, itself last), when it holds ``MIN_ROWS`` rows, is moving
(:func:`~mlwarden.serve.stationary.moving`: one popular input re-sent by many with
small noise or re-encoded is a still ball, across keys as within one), and one of two
rules holds, by how many keys sent the ball's newest ``min_neighbours`` queries:

* **at most** ``max_keys`` (5; :meth:`CrossKey._few`): at least ``min_own`` of the ball
  (the query included) are ``K``'s, ``K`` holds at least ``1 / max_keys`` of the newest,
  and the query moved along the ball's drift from ``K``'s first query in the ball by at
  least ``ADVANCE`` (1.0) of that drift (the newer half's mean less the older half's):
  a search's keys each step along its path, and the query does not *follow* (below).
  The griefing guard: an attacker who sends
  near-copies of a victim's input, drifting away from it or onto it, builds a moving
  ball around it, but the victim's own queries there stay where they were and never
  advance along it (``tests/serve/test_serve_crosskey.py``: 0 alerts on the victim, 32
  without this test);
* **more** (a Sybil search over 20-150 keys, each a few steps, or one:
  :meth:`CrossKey._many`): the query lies ahead of the ball's older half along the
  drift by at least ``ADVANCE``, unless the ball or the query reads as benign:

  - a *dense stream*: the ball's newest ``SPAN`` (40) distinct vectors lie, at the
    median, within ``DENSE`` (0.15) of the radius of their own key's nearest earlier
    vector and within ``SHARED`` (0.15) of another key's (apps polling one camera
    together: each frame a near-copy of the app's last and of the others' frames). A
    Sybil search whose accounts each follow a step with near-copies of their own
    (i23f's ``sybilselfpad``) meets the first half only: the other keys' rows near a
    step are other steps (on the realworld images the crowdcam's balls lay at a median
    0.07-0.16 of the radius from another key's row, the padded search's 0.13-0.34);
  - *few directions*: on vectors of ``MIN_VALUES`` (64) or more values, those 40 vary
    along at most ``FEW_DIMS`` (15) effective dimensions
    (:func:`~mlwarden.serve.stationary.dims` of their successive differences: a
    lighting change, a passer-by, popular inputs re-encoded);
  - the query is a *copy*: within ``COPY`` (0.1) of the radius of any earlier vector
    of the ball (the same frame from another app), or within ``RESEND`` (0.3) of one of
    its own key's;
  - the query *follows* (:func:`_follows`, also in the rule for at most ``max_keys``):
    its key's move since its previous vector ``p`` in the ball is the move the other
    keys made between ``p`` and it (their mean after ``p`` less the mean of as many
    before), to within ``FOLLOW`` (0.5) of the key's move: the key keeps its offset
    from the others. Griefers who send a public webcam's frames before its owner does
    (each copy with noise, biased by clipping at 0 and 1, so the owner's frame is no
    copy of theirs: 0.66 of the radius from the nearest with noise 0.03) make every
    move of the scene first; the owner follows (0.2-0.34 at its moves on the realworld
    images) while a search's step is a fresh move of its own (0.6-1.3 at the 5th-95th
    percentile over 20 keys). Only the key's previous vector within ``SPAN`` other
    rows is read: over a longer interval a search's drift carries every key along;

  Measured on the realworld benchmark's images (calibrated): the noisy search's balls
  (sigma 0.01) spanned 17-40 effective dimensions (1st-90th percentile), ``crowdcam``'s
  (20 apps, one camera, JPEG at each app's quality) 4-12.6 where not dense, ``crowd``'s
  (trending inputs re-encoded) 1.7-4.6. Each rule is an excuse an attacker can aim at;
  each costs it: padding each step with other keys' near-copies (i23f's ``sybilpad``)
  leaves each step a new point and each key's own rows apart (flagged at 31-139); with
  its own (``sybilselfpad``) no other key's row is near a step; to meet both halves
  each step needs near-copies from its own key and another's, 5 a step (6 times the
  queries, 50 steps in 300: unflagged, and so is a step followed by 5 followers' biased
  copies, whose differences span 20 fixed directions).
  Without the dense, copy and resend rules 20 apps polling the test's camera raised 728
  alerts in 1,000 queries, with them 0.

The alert names the keys that took part (:attr:`CrossKey.parties`: the keys of the
ball, in the audit row's ``detail``). Only the key whose query was flagged gets the
alert and the configured ``action``: the others are listed, and each is flagged when a
query of its own meets the rule (with ``action: block``, on its next step in the
search). So ``block`` on cross-key evidence blocks a key only for its own step in a
moving ball: copying a victim's queries cannot get the victim blocked (its copies are
no step ahead, or they are its own resends), and the names in ``detail`` are evidence
for the operator, not a verdict on each key.

Cost: a batch joins the window (its sketch and norm, as the similarity detector stores
them) and the window's sketch is scanned for the batch at once (~1,000 x 17 values a
query; the sketch's candidates' distances then decide): one compiled call
(:func:`~mlwarden.serve.kernels.crosskey_near`; numpy where numba is missing, the same
pairs). The scan hands each query its neighbours, so only a query with a neighbour
there pays more: its neighbours copied to the kept ring, one distance to each row of
the kept ring, and for a ball of ``min_neighbours`` the tests above (a unique over the
ball, ``SPAN`` x ``CAP`` distances, the drift test on at most ``CAP`` rows).
Memory: about ``(window + kept) * (dims + 10) * 4`` bytes for the whole gateway, not per
key (:meth:`CrossKey.nbytes`: 1.65 MB at the defaults and 128 values). Both rings are
stored in the audit database (key ``*``, kind ``crosskey``) like the per-key histories,
so a restart forgets nothing (1.3 MB a blob at the defaults, full).

What it cannot see: a search over more than ``max_keys`` keys each of whose queries lies
within ``DENSE`` of the radius of its key's previous one (a dense stream, as a camera's:
over k keys such a search moves at most 0.15 of the radius in k steps), or whose steps
vary along at most ~15
fixed directions (a few fixed blocks, as i22e's ``mirror``), as ``stationary.recoded``
cannot see such a search on one key; a search whose steps are fewer than
``min_neighbours`` in the ``kept`` queries with neighbours (a gateway whose benign
traffic is itself mostly near-copies, crowds or cameras, dilutes the kept ring as
distinct traffic diluted the window); and griefers who send a *moving* victim's next
query before it does (a public webcam's next frame, with noise of their own), whose
ball then holds the victim's frames along its own path: i22e's ``griefcam`` (10
griefers, noise 0.01) got the victim 60 crosskey alerts per 1,000, i23f's
``griefcam3`` (noise 0.03) 92, on top of the 808-828 the victim's own moving stream
raises from the per-key detectors alone (a key whose frames others can predict is a
camera; a camera profile, i23d's, is where to excuse it).
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from mlwarden.serve.config import CrossKey as CrossKeyConfig
from mlwarden.serve.dilution import _ring
from mlwarden.serve.stationary import CAP, MIN_ROWS, MIN_VALUES, TIGHT, moving
from mlwarden.serve.stationary import dims as effective_dims

STATE_KEY = "*"  # the audit database's state row of the gateway-wide ring (key, kind)
STATE_KIND = "crosskey"
# how far the flagged query must have moved from its key's first query in the ball, along
# the ball's drift (the newer half's mean less the older half's), in units of that drift
ADVANCE = 1.0
# a search over more than max_keys keys (CrossKey._many): the ball's newest SPAN distinct
# rows; a median distance from each to its key's nearest earlier row below DENSE of the
# radius, and from each to another key's nearest earlier row below SHARED, is a dense
# stream (apps polling one scene together; a Sybil search whose accounts pad their own
# steps, sybilselfpad, has the first: other keys' rows are other steps), and a query
# within RESEND of the radius of its own key's earlier query in the ball is a resend
SPAN = 40
DENSE = 0.15
SHARED = 0.15
RESEND = 0.3
COPY = 0.1  # ... and one within COPY of the radius of any earlier query, a copy: no new step
# ... and rows of MIN_VALUES or more values whose successive differences span at most
# FEW_DIMS effective dimensions (stationary.dims) are one scene changing or a few inputs
# re-encoded, not a search's steps
FEW_DIMS = 15.0
# a query that follows (_follows): its key's move since its previous query in the ball
# was the other keys' move before it, to within FOLLOW of that move (a webcam's owner
# whose frames griefers send first): no step of its own
FOLLOW = 0.5


@functools.lru_cache(maxsize=8)
def _digest_axis(dims: int) -> np.ndarray:
    """A fixed random direction: byte-for-byte copies project to one value, distinct
    rows to distinct values but with probability ~0."""
    return np.random.default_rng(dims).standard_normal(dims).astype(np.float32)


def _own_gaps(ball: np.ndarray, keys: np.ndarray, m: int, same: bool = True) -> np.ndarray:
    """For each of the newest ``m`` rows of ``ball`` (in arrival order), the squared
    distance to the nearest earlier row of the same key (``same``; else of another key;
    ``inf``: none)."""
    n = len(ball)
    tail, tk = ball[n - m :], keys[n - m :]
    sq = np.einsum("ij,ij->i", ball, ball)
    d2 = sq[n - m :, None] + sq[None, :] - 2.0 * (tail @ ball.T)
    earlier = np.arange(n)[None, :] < np.arange(n - m, n)[:, None]
    return np.where(earlier & ((tk[:, None] == keys[None, :]) == same), d2, np.inf).min(axis=1)


def _follows(ball: np.ndarray, keys: np.ndarray, kid: int, q: np.ndarray) -> float:
    """How far ``q`` of key ``kid`` strays from following the other keys, in units of its
    move from the key's previous row ``p`` in ``ball``: ``|(q - b) - (p - a)| / |q - p|``,
    ``b`` the mean of the rows of other keys after ``p`` and ``a`` of as many before it
    (``inf``: no ``p``, no such rows, or more than ``SPAN`` after it). Small: the key moved as the
    others had just moved and kept its offset from them (griefers who send a webcam's
    frames first, each copy biased by clipping or a codec of its own); a search's step is
    a fresh move of its own, and the first key to make a move leads it."""
    mine = np.flatnonzero(keys == kid)
    if not len(mine):
        return np.inf
    at = int(mine[-1])
    other = np.flatnonzero(keys != kid)
    before, after = other[other < at], other[other > at]
    m = min(len(before), len(after))
    if m < 1 or len(after) > SPAN:
        return np.inf  # over a longer interval a search's drift carries every key along
    p = ball[at]
    resid = (q - ball[after[-m:]].mean(axis=0)) - (p - ball[before[-m:]].mean(axis=0))
    move = float(np.sqrt((q - p) @ (q - p)))
    return float(np.sqrt(resid @ resid)) / move if move > 0 else np.inf


def _advance(ball: np.ndarray, first: np.ndarray, q: np.ndarray) -> float:
    """How far ``q`` lies beyond ``first`` along the drift of ``ball`` (rows in arrival
    order): ``(q - first) . u / |u|^2``, ``u`` the newer half's mean less the older half's
    (0.0 when the ball has no drift)."""
    h = len(ball) // 2
    u = ball[h:].mean(axis=0) - ball[:h].mean(axis=0)
    uu = float(u @ u)
    return float((q - first) @ u) / uu if uu > 0 else 0.0


class CrossKey:
    """The gateway-wide rings of recent reduced queries and the cross-key rules.

    Args:
        config: ``detection.crosskey``.
        radius: ``similarity.radius`` (RMS per value of the reduced vectors).
        need: ``similarity.min_neighbours`` (used when ``config.min_neighbours`` is unset).
        make: builds the ring for vectors of ``dims`` values: a
            :class:`~mlwarden.serve.monitor.Similarity` of ``history = window = config.window``
            (passed in, so that this module does not import the monitor).
        tag: a digest of the units the vectors are measured in; a stored ring of other
            units is not loaded.
        kernels: returns :mod:`mlwarden.serve.kernels` once compiled, else None (numpy
            then does the same work).
    """

    def __init__(self, config: CrossKeyConfig, radius: float, need: int,
                 make: Callable[[int], Any], tag: int = 0,
                 kernels: Callable[[], Any] | None = None) -> None:  # fmt: skip
        self.config = config
        self.radius = radius
        self.need = config.min_neighbours or need
        self.tag = tag
        self._make = make
        self._kernels = kernels  # the compiled kernels, or None (monitor._kernels)
        self._sim: Any = None
        self._who = np.full(config.window, -1, dtype=np.int32)  # key id of each ring slot
        self._when = np.full(config.window, -1, dtype=np.int64)  # arrival of each slot
        self._copied = np.zeros(config.window, dtype=bool)  # the slot's query is kept
        self._kept = _Kept(config.kept, 0)
        self._names: list[str] = []
        self._ids: dict[str, int] = {}
        self._seen = 0  # distinct queries of all keys so far
        self.unsaved = 0
        #: key -> the keys of its last cross-key alert's ball (itself included)
        self.parties: dict[str, tuple[str, ...]] = {}
        self.lock = threading.Lock()

    def observe(self, key: str, vs: np.ndarray, own: np.ndarray | None = None) -> list[int]:
        """Add ``key``'s reduced queries ``vs`` (B, dims), in order; the positions flagged.

        ``own`` (each query's neighbours among its key's own recent queries) is not
        read: a search spread over many keys gives each key too few steps to count.
        """
        if not len(vs):
            return []
        with self.lock:
            if self._sim is None or _ring(self._sim)[0].shape[1] != vs.shape[1]:
                self._fresh(vs.shape[1])
            kid, start = self._id(key), self._seen
            vs = np.ascontiguousarray(vs, dtype=np.float32)
            slots = self._add(vs, kid, start)
            self._seen += len(vs)
            self.unsaved += len(vs)
            out = []
            for j, near in self._touched(vs, start, slots):
                q, at = np.asarray(vs[j], dtype=np.float32), start + j
                self._keep(q, kid, at, int(slots[j]), near)
                parties = self._judge(kid, q, at)
                if parties:
                    out.append(j)
                    self.parties[key] = tuple(self._names[k] for k in parties)
            return out

    def _add(self, vs: np.ndarray, kid: int, start: int) -> np.ndarray:
        """Write the batch into the window as ``Similarity.observe_many(scan=False)``
        writes it (rows, norms, sketches: the same values, without its counts' set-up),
        with its key and arrivals (from ``start`` on); the ring slots written."""
        sim = self._sim
        _, _, hist, nxt, filled = _ring(sim)
        count, first = len(vs), nxt % hist
        if count > hist or first + count > hist:  # wraps: the general path
            sim.observe_many(vs, whole=False, scan=False)
            slots: Any = (nxt + np.arange(count)) % hist
            at = slots
        else:  # one run of slots
            s = sim._sketch_of(vs)
            half = np.einsum("ij,ij->i", s, s) / 2
            vn = np.einsum("ij,ij->i", vs, vs)
            sim._next, sim._filled = nxt + count, min(filled + count, hist)
            kernels = self._kernels() if self._kernels is not None else None
            if kernels is not None:  # one compiled call writes what the numpy below does
                ring, norms = _ring(sim)[:2]
                kernels.crosskey_add(vs, vn, s, half, ring, norms, sim._sketch, self._who,
                                     self._when, self._copied, kid, start, first)  # fmt: skip
                if sim._bits is not None:
                    sim._bits = None  # as _put: rows whose bits were not packed
                return np.arange(first, first + count)
            at = slice(first, first + count)
            sim._put(at, vs, vn, s, half, None)
            slots = np.arange(first, first + count)
        self._who[at] = kid
        self._when[at] = np.arange(start, start + count)
        self._copied[at] = False
        return np.asarray(slots)

    def _touched(
        self, vs: np.ndarray, start: int, slots: np.ndarray
    ) -> list[tuple[int, np.ndarray]]:
        """The batch's rows (arriving from ``start`` on, just written to ring ``slots``)
        with an earlier neighbour in the window, each with those neighbours' ring slots
        (ascending): the similarity ring's sketch scan (a lower bound of each distance, so
        no neighbour is missed) for the batch at once, then the candidates' distances;
        compiled where numba is (:func:`mlwarden.serve.kernels.crosskey_near`: one call,
        the same pairs)."""
        vs = np.ascontiguousarray(vs, dtype=np.float32)
        ring, norms, hist, _, filled = _ring(self._sim)
        limit = self.radius**2 * vs.shape[1]
        kernels = self._kernels() if self._kernels is not None else None
        if kernels is not None and len(vs) <= hist:
            flat, close = kernels.crosskey_near(vs, self._sim._sketch, filled, slots,
                                                self._when, start, ring, norms, limit)  # fmt: skip
            j, slot = np.divmod(flat, filled)
            if close.any():  # within rounding of the radius: numpy's float32 sum decides
                keep = ~close
                keep[close] = self._d2(vs, j[close], slot[close]) < limit
                j, slot = j[keep], slot[keep]
        else:
            j, slot = self._scan(vs, start, slots, limit)
        if not len(j):
            return []
        if len(vs) == 1:  # batch 1 (action: block): one query, no grouping
            return [(0, slot)]
        cuts = np.flatnonzero(np.diff(j)) + 1  # grouped by query
        return list(zip(j[np.append(0, cuts)].tolist(), np.split(slot, cuts), strict=True))

    def _scan(self, vs: np.ndarray, start: int, slots: np.ndarray,
              limit: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """:meth:`_touched`'s (query, slot) pairs within the radius, by numpy."""
        sim = self._sim
        filled = _ring(sim)[4]
        slack = (limit * 1.001 + 1e-4) / 2
        if len(vs) <= len(sim._sketch[0]):  # the sketches as the ring stores them
            query = sim._sketch[:, slots].T
            bound = -query[:, -1] - slack  # (s, -|s|^2 / 2): |s|^2 / 2 less the slack
        else:
            sk = sim._sketch_of(vs)
            query = np.hstack([sk, np.zeros((len(vs), 1), np.float32)])
            bound = np.einsum("ij,ij->i", sk, sk) / 2 - slack
        query[:, -1] = 1.0  # (s, 1) . (h, -|h|^2 / 2) = s.h - |h|^2 / 2
        j, slot = np.divmod(
            np.flatnonzero(query @ sim._sketch[:, :filled] > bound[:, None]), filled
        )
        early = self._when[slot] < start + j  # the batch's own later rows are not earlier
        j, slot = j[early], slot[early]
        inside = self._d2(vs, j, slot) < limit
        return j[inside], slot[inside]

    def _d2(self, vs: np.ndarray, j: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Squared distances of batch rows ``j`` to window slots ``slot`` (float32)."""
        ring, norms = _ring(self._sim)[:2]
        dot = np.einsum("ij,ij->i", ring[slot], vs[j])
        return norms[slot] + np.einsum("ij,ij->i", vs[j], vs[j]) - 2.0 * dot

    def _keep(self, q: np.ndarray, kid: int, at: int, slot: int, near: np.ndarray) -> None:
        """Keep ``q`` and its earlier neighbours in the window (their slots ``near``) that
        are not kept yet, in arrival order."""
        ring = _ring(self._sim)[0]
        new = near[~self._copied[near]]
        for s in new[np.argsort(self._when[new], kind="stable")].tolist():
            self._kept.add(ring[s], int(self._who[s]), int(self._when[s]))
        self._copied[new] = True
        self._kept.add(q, kid, at)
        self._copied[slot] = True

    def _fresh(self, dims: int) -> None:
        self._sim = self._make(dims)
        self._who[:] = -1
        self._when[:] = -1
        self._copied[:] = False
        self._kept = _Kept(self.config.kept, dims)

    def _id(self, key: str) -> int:
        kid = self._ids.get(key)
        if kid is None:
            kid = self._ids[key] = len(self._names)
            self._names.append(key)
        return kid

    def _judge(self, kid: int, q: np.ndarray, at: int) -> list[int]:
        """The keys of query ``q``'s ball (``kid``'s included, sorted) when a rule flags
        it (module docstring); empty when none does."""
        c, dims = self.config, len(q)
        rows, keys, d2 = self._kept.ball(q, at, self.radius**2 * dims)
        if len(rows) < self.need:
            return []
        parties = set(keys.tolist()) | {kid}
        if len(parties) < c.min_keys:
            return []  # alone in its ball: the per-key detectors' case
        # rows as one number each (a fixed random projection): np.unique over rows sorts
        # them lexicographically, ~10 ms for a ball of 1,000 rows of 128 values
        _, firsts = np.unique(rows @ _digest_axis(dims), return_index=True)
        if len(firsts) < self.need:
            return []  # copies of a few popular inputs, not a search
        keep = np.sort(firsts)[-(CAP - 1) :]  # byte-for-byte copies: the first only
        ball, bkeys = rows[keep], keys[keep]
        if len(set(keys[-self.need :].tolist()) | {kid}) <= c.max_keys:
            if not self._few(kid, keys, rows, (ball, bkeys), q):
                return []
        elif not self._many(kid, ball, bkeys, q):
            return []
        near = d2[keep] < (TIGHT * self.radius) ** 2 * dims
        cloud = np.vstack([ball[near], q[None]])  # its own cloud, as stationary.still's
        if len(cloud) >= MIN_ROWS and not moving(cloud, self.radius):
            return []  # one popular input re-encoded by many: a still ball
        return sorted(parties)

    def _few(self, kid: int, keys: np.ndarray, rows: np.ndarray,
             distinct: tuple[np.ndarray, np.ndarray], q: np.ndarray) -> bool:  # fmt: skip
        """A search over at most ``max_keys`` keys: ``kid`` took its share of the ball's
        newest ``need`` queries and advanced along the ball's drift from its first query
        there, and ``q`` is no move the other keys made first (``keys``, ``rows``: the whole ball, copies included, in
        arrival order; ``distinct``: its distinct rows and their keys)."""
        c = self.config
        mine = np.flatnonzero(keys == kid)
        own = np.count_nonzero(keys[-self.need :] == kid) + 1
        if len(mine) + 1 < c.min_own or own < (self.need + 1) / c.max_keys:
            return False  # the key took too few of the ball's steps
        ball, bkeys = distinct
        # the ball moves, the key does not: a resend (the griefing guard)
        if _advance(ball, rows[mine[0]], q) < ADVANCE:
            return False
        return _follows(ball, bkeys, kid, q) > FOLLOW  # others moved there first: griefers

    def _many(self, kid: int, ball: np.ndarray, keys: np.ndarray, q: np.ndarray) -> bool:
        """A search over more than ``max_keys`` keys: the ball's newest rows are neither
        a dense stream nor low-dimensional, ``q`` is no copy of an earlier query nor a
        resend of its key's own, and it steps ahead of the ball's older half along its
        drift (``ball``, ``keys``: its distinct rows in arrival order and their keys)."""
        r2 = self.radius**2 * len(q)
        tail = ball[-SPAN:]
        m = len(tail)
        if (
            float(np.median(_own_gaps(ball, keys, m))) < DENSE**2 * r2
            and float(np.median(_own_gaps(ball, keys, m, same=False))) < SHARED**2 * r2
        ):
            return False  # apps polling one scene: each row a near-copy of its key's last and of another's
        if len(q) >= MIN_VALUES and effective_dims(tail) <= FEW_DIMS:
            return False  # one scene's changes (light, a passer-by) or inputs re-encoded
        dq = ((ball - q) ** 2).sum(axis=1)
        if float(dq.min()) < COPY**2 * r2:
            return False  # a copy of another query (the same frame from another app)
        if float(dq[keys == kid].min(initial=np.inf)) < RESEND**2 * r2:
            return False  # the key resends its own earlier query
        if _follows(ball, keys, kid, q) <= FOLLOW:
            return False  # others made the key's move before it: griefers ahead of a webcam
        h = len(ball) // 2
        return _advance(ball, ball[:h].mean(axis=0), q) >= ADVANCE

    def nbytes(self) -> int:
        sim = 0 if self._sim is None else int(self._sim.nbytes())
        k = self._kept
        kept = k.rows.nbytes + k.norms.nbytes + k.who.nbytes + k.when.nbytes
        return sim + self._who.nbytes + self._when.nbytes + self._copied.nbytes + kept

    def dump(self) -> bytes | None:
        """The ring as one ``.npz`` blob (``None``: nothing seen yet)."""
        with self.lock:
            if self._sim is None:
                return None
            arrays = {f"similarity.{k}": v for k, v in self._sim.dump().items()}
            filled = _ring(self._sim)[4]
            arrays.update({
                "who": self._who[:filled],
                "when": self._when[:filled],
                "copied": self._copied[:filled],
                "names": np.array(self._names, dtype=str),
                "meta": np.array([self._seen, self.tag, _ring(self._sim)[0].shape[1]],
                                 dtype=np.uint64),
            })  # fmt: skip
            arrays.update(self._kept.dump())
            self.unsaved = 0
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def load(self, blob: bytes) -> None:
        """Restore what :meth:`dump` wrote; a blob of other units or shape is ignored."""
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            seen, tag, dims = (int(v) for v in arrays["meta"])
            who, when = arrays["who"].astype(np.int32), arrays["when"].astype(np.int64)
            names = [str(n) for n in arrays["names"].tolist()]
            copied = arrays["copied"].astype(bool)
            kept = {k: v for k, v in arrays.items() if k.startswith("kept.")}
        except (ValueError, KeyError, OSError, EOFError):
            return
        n = len(who)
        if (
            tag != self.tag
            or n != len(when)
            or n != len(copied)
            or n > len(self._who)
            or max(who.max(initial=-1), kept.get("kept.who", who).max(initial=-1)) >= len(names)
        ):
            return
        with self.lock:
            self._fresh(dims)
            part = {k[11:]: v for k, v in arrays.items() if k.startswith("similarity.")}
            try:
                self._sim.load(part)
            except (KeyError, ValueError, IndexError):
                self._fresh(dims)
                return
            if _ring(self._sim)[4] != n or not self._kept.load(kept):
                self._fresh(dims)
                return
            self._who[:n], self._when[:n], self._copied[:n] = who, when, copied
            self._names = names
            self._ids = {k: i for i, k in enumerate(names)}
            self._seen = seen


class _Kept:
    """A ring of the queries that had a neighbour in the window at arrival, and those
    neighbours: what a search leaves behind, kept past the window that benign distinct
    traffic of all keys runs through (the busy gateway's ``window`` holds a handful of
    a search's steps; this ring, all of them). ``size`` rows of ``dims`` values with
    each one's squared norm, key id and arrival."""

    def __init__(self, size: int, dims: int) -> None:
        self.rows = np.zeros((size, dims), dtype=np.float32)
        self.norms = np.zeros(size, dtype=np.float32)
        self.who = np.full(size, -1, dtype=np.int32)
        self.when = np.full(size, -1, dtype=np.int64)
        self.next = 0
        self.filled = 0

    def add(self, row: np.ndarray, who: int, when: int) -> None:
        s = self.next % len(self.rows)
        self.rows[s], self.norms[s] = row, float(row @ row)
        self.who[s], self.when[s] = who, when
        self.next, self.filled = s + 1, min(self.filled + 1, len(self.rows))

    def ball(self, q: np.ndarray, at: int, r2: float) -> tuple[np.ndarray, ...]:
        """The rows within squared distance ``r2`` of ``q`` that came before ``at``, in
        arrival order: (rows, key ids, squared distances)."""
        n = self.filled
        d2 = self.norms[:n] + float(q @ q) - 2.0 * (self.rows[:n] @ q)
        inside = (self.when[:n] < at) & (d2 < r2)
        order = np.flatnonzero(inside)[np.argsort(self.when[:n][inside], kind="stable")]
        return self.rows[order], self.who[order], d2[order]

    def dump(self) -> dict[str, np.ndarray]:
        n = self.filled
        at = np.array([self.next % max(len(self.rows), 1)], dtype=np.int64)
        return {"kept.rows": self.rows[:n], "kept.who": self.who[:n],
                "kept.when": self.when[:n], "kept.next": at}  # fmt: skip

    def load(self, arrays: dict[str, np.ndarray]) -> bool:
        """Restore :meth:`dump`'s arrays; False (and nothing changed) when they do not fit."""
        rows, who, when = (arrays.get(f"kept.{k}") for k in ("rows", "who", "when"))
        nxt = arrays.get("kept.next")
        if rows is None or who is None or when is None or nxt is None:
            return False
        n = len(rows)
        if n > len(self.rows) or rows.shape[1:] != self.rows.shape[1:] or len(who) != n \
                or len(when) != n or not 0 <= int(nxt[0]) <= len(self.rows):  # fmt: skip
            return False
        self.rows[:n], self.who[:n], self.when[:n] = rows, who, when
        self.norms[:n] = np.einsum("ij,ij->i", rows, rows)
        self.next, self.filled = int(nxt[0]), n
        return True
