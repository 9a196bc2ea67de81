"""A secret sketch of each query's raw input: the still-ball rule's second view.

The detectors measure a query on its reduced vector (:func:`~mlwarden.serve.monitor.reduce`:
block means; :func:`~mlwarden.serve.monitor.reduce_audio`: each frame's energy). That
reduction is public, so it has a null space an attacker can read: a search whose steps
have zero mean over every block (audio: keep each frame's energy) is one point to the
similarity, dilution, PRADA and still-ball detectors. With fresh noise a query (projected
too, breaking Blacklight's hashes) it was excused as one input resent with noise:
``nullnoise`` of ``benchmarks/gateway_detection_realworld.py`` went unflagged in 300
queries in 4/5 audio runs and 1/5 image runs, with an adversarial input in hand (i22e,
session 9).

Here each query also gets ``K`` (32) projections of its raw standardised input on
Gaussian directions drawn from a per-gateway secret (:func:`new_secret`: 32 bytes from
the OS CSPRNG on first start, stored in the state database, never logged, in no metric,
no config and no key's state blob), divided by the square root of the number of values:
each projection of a difference is about its RMS per value, whatever the input's size
(the units of the similarity radius). A key keeps the sketches of its similarity
history's rows, slot for slot (:class:`Ring`). A cloud the still-ball rule would excuse
(:func:`~mlwarden.serve.stationary.still`, :func:`~mlwarden.serve.stationary.settle`: its
own cloud still, or one input re-encoded) is excused only when its sketches are still
too (:func:`quiet`): their centre does not move (the same drift test,
:func:`~mlwarden.serve.stationary.drift_p`, at the same ``ALPHA``).

Why it holds: a direction the attacker cannot see is a direction the attacker cannot
avoid. A step ``d`` with RMS ``r`` per value moves each projection by about ``r``
(``N(0, r^2)`` over the secret's draw), so a search's accumulated steps move the
sketch's centre as they move the input; to keep it still an attacker needs steps
orthogonal to 32 unknown directions, which without the secret it cannot aim at (a
random step has a chance of about ``(eps / r)^32`` of moving all 32 by less than
``eps``). Fresh noise of any spread moves the centre by nothing: it stays a still ball
there, so a noisy resend is excused as before. What it cannot see: a search whose
queries are draws from one fixed distribution around one point for the whole cloud
(an NES-style estimate at one point, then one jump farther than the cloud; bounded by
the query budget, as :mod:`mlwarden.serve.stationary` says); one that sends each
candidate as the pair ``x0 + d``, ``x0 - d`` around a fixed ``x0`` (``mirror``: every
linear view's centre stays at ``x0``; what changes when it keeps a step is the cloud's
spread, not its centre. A test of the spread about the median was tried and dropped:
it vetoed photos re-encoded by a benign client at p ~ 1e-7 and no ``mirror`` cloud
below 6e-4); a search on text (MinHash features, no sketch) or on tables whose rows
have at most ``max_dims`` values (the reduced vector is the row itself: no null space).

Cost: one (B, n) x (n, 32) product a batch (n values an input; 0.1 M multiply-adds a
3x32x32 image), and the drift test on at most 256 x 32 values, only where the
still-ball rule would drop an alert. Memory: ``history * 32 * 4`` bytes a key (1.3 MB
at 10,000 queries), stored in the key's blob in float16 (0.64 MB) beside the similarity
history; the matrix, ``n * 32 * 4`` bytes, once per gateway.

Example::

    sk = Sketch(new_secret())
    s = sk.of(np.zeros((4, 3, 32, 32), np.float32), 1.0)   # (4, 32)
"""

from __future__ import annotations

import hashlib
import secrets

import numpy as np

from mlwarden.serve.stationary import ALPHA, drift_p

K = 32  # secret projections a query
# sketches a cloud needs before they are tested: on fewer the test's estimates of the
# noise's spread are too rough (32 values of white noise: p < 1e-5 in 0.4% of 6-row
# clouds, 0.1% of 8-row, none of 2,000 10- to 21-row ones).
# A search's clouds are larger: an alert needs ``min_neighbours`` (20) in its ball, and
# its own cloud is judged alone only when that holds half of them (stationary.still)
ROWS = 16
SECRET_BYTES = 32
STATE_KEY = "*"  # the state database's row of the gateway's secret: (key, kind)
STATE_KIND = "sketch"


def new_secret() -> bytes:
    """A fresh gateway secret: ``SECRET_BYTES`` from the OS CSPRNG."""
    return secrets.token_bytes(SECRET_BYTES)


class Sketch:
    """``k`` secret Gaussian projections of a flattened input, in RMS per value.

    The projection matrix for inputs of ``n`` values is drawn from the secret and ``n``
    on first use (``n x k`` float32). ``tag``: a digest of the secret (not the secret),
    so a stored ring measured under another secret is not mixed with this one's.
    """

    def __init__(self, secret: bytes, k: int = K) -> None:
        if len(secret) < 16:
            raise ValueError(f"a sketch secret needs at least 16 bytes, got {len(secret)}")
        digest = hashlib.sha256(b"mlwarden.sketch\0" + secret).digest()
        self._seed = [int.from_bytes(digest[i : i + 8], "little") for i in range(0, 32, 8)]
        self.tag = int.from_bytes(hashlib.sha256(b"tag\0" + digest).digest()[:8], "little")
        self.k = k
        self._mats: dict[int, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"Sketch(k={self.k})"  # never the secret

    def _matrix(self, n: int) -> np.ndarray:
        m = self._mats.get(n)
        if m is None:
            rng = np.random.default_rng([*self._seed, n])
            m = (rng.standard_normal((n, self.k)) / np.sqrt(n)).astype(np.float32)
            self._mats[n] = m
        return m

    def of(self, xs: np.ndarray, scale: float) -> np.ndarray:
        """The sketches (B, k) of a batch ``xs`` (B, ...) in units of ``scale`` (the width
        of the input range): a difference's projections are about its RMS per value."""
        flat = np.asarray(xs, dtype=np.float32).reshape(len(xs), -1)
        return (flat @ self._matrix(flat.shape[1])) / np.float32(scale)


class Ring:
    """One key's sketches, slot for slot beside its similarity history (a query numbered
    ``g`` there sits in slot ``g % history``); ``known``: slots written under this secret
    (after a restart without a stored ring: none)."""

    def __init__(self, history: int, k: int = K) -> None:
        self.rows = np.zeros((history, k), dtype=np.float32)
        self.known = np.zeros(history, dtype=bool)

    def take(self, ids: np.ndarray, batch: np.ndarray, first: int) -> np.ndarray:
        """The sketches of queries ``ids`` (similarity numbers, in order): the batch's
        (numbered from ``first``, not written yet) from ``batch``, earlier ones from the
        ring; rows overwritten since or never written under this secret are left out."""
        ids = np.asarray(ids, dtype=np.int64)
        new = ids >= first
        hist = len(self.rows)
        slots = ids[~new & (ids >= first - hist)] % hist  # older slots: overwritten since
        old = self.rows[slots][self.known[slots]]
        if not new.any():
            return old
        return np.concatenate([old, batch[ids[new] - first]])  # ids in order: old first

    def put(self, batch: np.ndarray, first: int) -> None:
        """Write the batch's sketches (numbered from ``first``) into their slots."""
        hist = len(self.rows)
        if len(batch) > hist:  # only the newest ``history`` stay
            batch, first = batch[-hist:], first + len(batch) - hist
        slots = (first + np.arange(len(batch))) % hist
        self.rows[slots] = batch
        self.known[slots] = True

    def dump(self, filled: int, tag: int) -> dict[str, np.ndarray]:
        """The first ``filled`` slots (float16) and the secret's tag, for a key's blob."""
        return {"rows": self.rows[:filled].astype(np.float16), "known": self.known[:filled],
                "tag": np.array([tag], dtype=np.uint64)}  # fmt: skip

    def load(self, state: dict[str, np.ndarray], tag: int) -> None:
        """Restore :meth:`dump`'s slots when measured under this secret, else nothing."""
        rows, known = state["rows"], state["known"]
        if int(state["tag"][0]) != tag or rows.ndim != 2 or rows.shape[1] != self.rows.shape[1]:
            return
        n = min(len(rows), len(known), len(self.rows))
        self.rows[:n] = rows[:n].astype(np.float32)
        self.known[:n] = known[:n]

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.known.nbytes


def quiet(rows: np.ndarray, alpha: float = ALPHA) -> bool:
    """Whether a cloud's sketches ``rows`` (n, k), in time order, are a still ball too:
    their centre does not move (:func:`~mlwarden.serve.stationary.drift_p` at least
    ``alpha``). Fewer than ``ROWS`` rows: True (the reduced view decides alone).

    Example::

        rng = np.random.default_rng(0)
        quiet(rng.normal(0, 0.01, (40, 32)))                                   # True: noise
        quiet(np.linspace(0, 0.05, 40)[:, None] + rng.normal(0, 0.01, (40, 32)))  # False
    """
    return len(rows) < ROWS or drift_p(rows) >= alpha
