"""One search spread over several keys (Sybil accounts): a gateway-wide view of recent queries.

Every other detector is per key (:class:`~mlwarden.serve.monitor.Monitor` holds one
history per key), and Blacklight's own paper (Li et al., USENIX Security 2022) names
Sybil accounts as what defeats per-account detection: a search that sends its
steps round robin over 4 keys shows each key a quarter of its queries, so each key's
count of neighbours fills 4 times slower (``keys4`` of
``benchmarks/gateway_detection_outside.py``: flagged at 70-185 queries, with a wrong
answer already in hand on images, tables and text).

:class:`CrossKey` keeps the reduced vectors the similarity detector measures (the same
:func:`~mlwarden.serve.monitor.reduce`, projection and radius) of the last ``window``
distinct queries of *all* keys in one ring, with the key and arrival of each, and
counts a query's neighbours there as the per-key count does, on the similarity
detector's own sketch scan (so it costs one more scan of ``window`` rows a query).
A count of ``min_neighbours`` (default: ``similarity.min_neighbours``) is only a
candidate; the query of key ``K`` is flagged (alert ``crosskey``) when, among its
earlier neighbours within the radius in the last ``window`` queries of all keys (its
*ball*, in arrival order):

* they are at least ``min_neighbours`` *distinct* vectors: many users sending the same
  popular input byte for byte (a viral image, a template row) are one point;
* they and the query come from at least ``min_keys`` keys (one key's own search is the
  per-key detectors'), at least ``min_own`` of them (the query included) are ``K``'s,
  and the ball's newest ``min_neighbours`` queries (with the query) come from at most
  ``max_keys`` keys, ``K`` holding at least ``1 / max_keys`` of them: a search spread
  over k keys gives each about 1/k of its steps, while users re-sending a popular input,
  each re-encoded their own way, or polling one public camera, fill its ball a few
  copies each from many keys (20 keys sharing 10 images: 3.3 false alarms per 1,000
  without this rule, 0 with it; 20 apps polling one camera, i22e's ``crowdcam``: 429,
  then 0; ``benchmarks/gateway_crosskey.py``, ``gateway_detection_realworld.py``). A
  search over more than ``max_keys`` keys (default 5) is left to the per-key detectors;
* the query's own cloud (its ball's vectors within
  :data:`~mlwarden.serve.stationary.TIGHT` of the radius, itself last), when it holds
  ``MIN_ROWS`` rows, is moving (:func:`~mlwarden.serve.stationary.moving`, as the
  still-ball rule judges one key's alerts): one popular input re-sent by many with
  small noise is a still ball, across keys as within one;
* the query moved along the ball's drift from ``K``'s first query in the ball by at
  least ``ADVANCE`` (1.0) of that drift (the newer half's mean less the older half's):
  a search's keys each step along its path. This is the griefing guard: an attacker
  who sends near-copies of a victim's input, drifting away from it or onto it, builds
  a moving ball around it, but the victim's own queries there stay where they were and
  never advance along it (``tests/serve/test_serve_crosskey.py``: 0 alerts on the
  victim, 32 without this test); flagging the victim would take it stepping along the
  griefer's path itself.

The alert names the keys that took part (:attr:`CrossKey.parties`: the keys of the
ball, in the audit row's ``detail``). Only the key whose query was flagged gets the
alert and the configured ``action``: the others are listed, and each is flagged when a
query of its own meets the rule (with ``action: block``, on its next step in the
search). So ``block`` on cross-key evidence blocks a key only for its own steps in a
moving ball: copying a victim's queries cannot get the victim blocked, and the names
in ``detail`` are evidence for the operator, not a verdict on each key.

Cost: a query joins the ring (its sketch and norm, as the similarity detector stores
them); the ring is scanned (one sketch scan of ``window`` rows of ~17 values) only for a
batch with a query that already has :attr:`CrossKey.least` (4) neighbours among its own
key's recent queries, the similarity detector's count (no query with fewer can meet the
rule: its ball's queries of its own key are among them), and the judgement above runs
only for a query whose gateway-wide count reaches ``min_neighbours``.
Memory: ``window * (dims + 30) * 4`` bytes for the whole gateway (0.6 MB at the
defaults and 128 values), not per key. The ring is stored in the audit database (key
``*``, kind ``crosskey``) like the per-key histories, so a restart forgets nothing.

What it cannot see: a search over more than ``max_keys`` keys; a search whose steps
are fewer than ``min_neighbours`` in any ``window`` queries of the whole gateway (heavy
benign traffic dilutes the gateway-wide window as it does not dilute a key's: i22e's
``busy4``, 100 other users' queries between two steps, is left to the per-key
detectors); and griefers who send a *moving* victim's next query before it does (a
public webcam's next frame) with fewer than ``max_keys`` keys, whose ball then holds
the victim's steps along its own path (that victim's stream is itself a moving ball,
which the per-key detectors flag anyway: 828 per 1,000 alone, i22e's ``griefcam``).
"""

from __future__ import annotations

import functools
import io
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from mlwarden.serve.config import CrossKey as CrossKeyConfig
from mlwarden.serve.dilution import _ring
from mlwarden.serve.stationary import CAP, MIN_ROWS, TIGHT, moving

STATE_KEY = "*"  # the audit database's state row of the gateway-wide ring (key, kind)
STATE_KIND = "crosskey"
# how far the flagged query must have moved from its key's first query in the ball, along
# the ball's drift (the newer half's mean less the older half's), in units of that drift
ADVANCE = 1.0


@functools.lru_cache(maxsize=8)
def _digest_axis(dims: int) -> np.ndarray:
    """A fixed random direction: byte-for-byte copies project to one value, distinct
    rows to distinct values but with probability ~0."""
    return np.random.default_rng(dims).standard_normal(dims).astype(np.float32)


def _advance(ball: np.ndarray, first: np.ndarray, q: np.ndarray) -> float:
    """How far ``q`` lies beyond ``first`` along the drift of ``ball`` (rows in arrival
    order): ``(q - first) . u / |u|^2``, ``u`` the newer half's mean less the older half's
    (0.0 when the ball has no drift)."""
    h = len(ball) // 2
    u = ball[h:].mean(axis=0) - ball[:h].mean(axis=0)
    uu = float(u @ u)
    return float((q - first) @ u) / uu if uu > 0 else 0.0


class CrossKey:
    """The gateway-wide ring of recent reduced queries and the cross-key rule.

    Args:
        config: ``detection.crosskey``.
        radius: ``similarity.radius`` (RMS per value of the reduced vectors).
        need: ``similarity.min_neighbours`` (used when ``config.min_neighbours`` is unset).
        make: builds the ring for vectors of ``dims`` values: a
            :class:`~mlwarden.serve.monitor.Similarity` of ``history = window = config.window``
            (passed in, so that this module does not import the monitor).
        tag: a digest of the units the vectors are measured in; a stored ring of other
            units is not loaded.
    """

    def __init__(self, config: CrossKeyConfig, radius: float, need: int,
                 make: Callable[[int], Any], tag: int = 0) -> None:  # fmt: skip
        self.config = config
        self.radius = radius
        self.need = config.min_neighbours or need
        #: the flagged key's own earlier queries a ball needs (min_own, and 1 / max_keys
        #: of its newest ``need``: :meth:`_judge`)
        self.least = max(config.min_own - 1, math.ceil((self.need + 1) / config.max_keys) - 1)
        self.tag = tag
        self._make = make
        self._sim: Any = None
        self._who = np.full(config.window, -1, dtype=np.int32)  # key id of each ring slot
        self._when = np.full(config.window, -1, dtype=np.int64)  # arrival of each slot
        self._names: list[str] = []
        self._ids: dict[str, int] = {}
        self._seen = 0  # distinct queries of all keys so far
        self.unsaved = 0
        #: key -> the keys of its last cross-key alert's ball (itself included)
        self.parties: dict[str, tuple[str, ...]] = {}
        self.lock = threading.Lock()

    def observe(self, key: str, vs: np.ndarray, own: np.ndarray | None = None) -> list[int]:
        """Add ``key``'s reduced queries ``vs`` (B, dims), in order; the positions flagged.

        ``own``: each query's neighbours among the key's own recent queries (the
        similarity detector's count, over at least ``window`` of them). A query needs
        :attr:`least` of its own key's queries in its ball to be flagged, so a batch in
        which none has that many is only added to the ring, not counted (the ring's
        scan is most of this detector's cost).
        """
        if not len(vs):
            return []
        with self.lock:
            if self._sim is None or _ring(self._sim)[0].shape[1] != vs.shape[1]:
                self._fresh(vs.shape[1])
            kid = self._id(key)
            hist, nxt = _ring(self._sim)[2:4]
            start = self._seen
            scan = own is None or bool(np.any(own >= self.least))
            recent, _ = self._sim.observe_many(vs, whole=False, scan=scan)
            slots = (nxt + np.arange(len(vs))) % hist
            self._who[slots] = kid
            self._when[slots] = start + np.arange(len(vs))
            self._seen += len(vs)
            self.unsaved += len(vs)
            if own is not None:
                recent = np.where(own >= self.least, recent, 0)
            out = []
            for j in np.flatnonzero(recent >= self.need).tolist():
                parties = self._judge(kid, np.asarray(vs[j], dtype=np.float32), start + j)
                if parties:
                    out.append(j)
                    self.parties[key] = tuple(self._names[k] for k in parties)
            return out

    def _fresh(self, dims: int) -> None:
        self._sim = self._make(dims)
        self._who[:] = -1
        self._when[:] = -1

    def _id(self, key: str) -> int:
        kid = self._ids.get(key)
        if kid is None:
            kid = self._ids[key] = len(self._names)
            self._names.append(key)
        return kid

    def _judge(self, kid: int, q: np.ndarray, at: int) -> list[int]:
        """The keys of query ``q``'s ball (``kid``'s included, sorted) when the rule
        flags it (module docstring); empty when it does not."""
        ring, norms, hist, _, filled = _ring(self._sim)
        c, dims = self.config, len(q)
        rows, who, when = ring[:filled], self._who[:filled], self._when[:filled]
        d2 = norms[:filled] + float(q @ q) - 2.0 * (rows @ q)
        inside = (when < at) & (when >= at - hist) & (d2 < self.radius**2 * dims)
        order = np.flatnonzero(inside)[np.argsort(when[inside], kind="stable")]
        ball, keys = rows[order], who[order]
        mine = np.flatnonzero(keys == kid)
        parties = set(keys.tolist()) | {kid}
        # the ball's newest ``need`` queries: a search spread over k keys gives each about
        # 1/k of them; many users re-sending one popular input, a few each
        late = keys[-self.need :]
        own = np.count_nonzero(late == kid) + 1
        crowd = len(set(late.tolist()) | {kid}) > c.max_keys
        few = len(mine) + 1 < c.min_own or own < (self.need + 1) / c.max_keys
        if few or crowd or len(parties) < c.min_keys:
            return []  # the key took too few of the ball's steps, or it is alone there
        # rows as one number each (a fixed random projection): np.unique over rows sorts
        # them lexicographically, ~10 ms for a ball of 1,000 rows of 128 values
        _, firsts = np.unique(ball @ _digest_axis(dims), return_index=True)
        if len(firsts) < self.need:
            return []  # copies of a few popular inputs, not a search
        keep = np.sort(firsts)  # byte-for-byte copies: the first only
        ball = ball[keep][-(CAP - 1) :]
        near = d2[order[keep]][-(CAP - 1) :] < (TIGHT * self.radius) ** 2 * dims
        cloud = np.vstack([ball[near], q[None]])  # its own cloud, as stationary.still's
        if len(cloud) >= MIN_ROWS and not moving(cloud, self.radius):
            return []  # one popular input re-encoded by many: a still ball
        if _advance(ball, rows[order[mine[0]]], q) < ADVANCE:
            return []  # the ball moves, the key does not: a resend (the griefing guard)
        return sorted(parties)

    def nbytes(self) -> int:
        sim = 0 if self._sim is None else int(self._sim.nbytes())
        return sim + self._who.nbytes + self._when.nbytes

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
                "names": np.array(self._names, dtype=str),
                "meta": np.array([self._seen, self.tag, _ring(self._sim)[0].shape[1]],
                                 dtype=np.uint64),
            })  # fmt: skip
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
        except (ValueError, KeyError, OSError, EOFError):
            return
        n = len(who)
        if (
            tag != self.tag
            or n != len(when)
            or n > len(self._who)
            or who.max(initial=-1) >= len(names)
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
            if _ring(self._sim)[4] != n:
                self._fresh(dims)
                return
            self._who[:n], self._when[:n] = who, when
            self._names = names
            self._ids = {k: i for i, k in enumerate(names)}
            self._seen = seen
