"""Stateful attack detection: watch each key's stream of queries, not single inputs.

Three detectors, all per key, after one filter:

* **exact repeats are dropped first**: an input identical to one of the key's recent
  inputs (a retry; a client drawing from a fixed set) reaches no detector, so it is
  never counted as probing and ``block`` never fires on a retry (see :class:`Monitor`);
* :class:`Blacklight` — Li, Shan, Wenger, Zhang, Zheng & Zhao, "Blacklight: Scalable
  Defense for Neural Networks against Query-Based Black-Box Attacks" (USENIX Security
  2022, arXiv:2006.14042). Query-based attacks (Square, HopSkipJump, NES, boundary
  attacks) send long runs of near-identical inputs. Each query is quantised (bins of
  ``quantization`` input units), flattened, cut into sliding windows of ``window``
  values (stride 1), every window hashed (the paper uses SHA-256; see
  :func:`fingerprint`), and the ``top`` largest distinct hashes kept as the query's
  fingerprint. A query whose fingerprint shares at least ``threshold`` hashes with an
  earlier query of the same key *matches* it; a matching query is flagged when at
  least ``chain`` of the key's last 64 queries matched, because one match is what a
  benign client re-sending a slightly different copy of an input produces. Matches
  are sought among the key's last ``history`` queries (default 1,000, the length of
  ``gateway calibrate``'s benign streams, so a calibrated setting holds at any stream
  length). The longer that history, the more benign matches: over 10,000 distinct
  digits and their one-pixel shifts, 718 of every 1,000 queries were flagged at a
  history of 10,000, 317 at 1,000, 12.7 at 64, while searches after 2,000 benign
  queries were still flagged within 27 (``benchmarks/gateway_detection_long.py``); 64
  is not the default because ``gateway calibrate`` then picks coarser bins that flag
  resent noisy copies of images. Searches that return to inputs sent long ago are the
  similarity detector's. The
  paper's settings for 32x32 CIFAR images are bins of 50/255, windows of 20, the top
  50 hashes and a threshold of 25; our defaults (bins of 0.1, windows of 20, top 50,
  threshold 20) are calibrated for small inputs such as 8x8 digits, where an input
  has only 45 windows. On audio (``input.modality: audio``) a window whose samples all
  lie within one bin of zero is not hashed (``blacklight.silence``, default: the bin
  width): the pauses and quiet low tones of speech quantise to the same runs of bins
  in every clip, and distinct recordings matched on them. Fresh noise on every query
  breaks the hashes (Feng et al., CCS 2023, arXiv:2303.06280), hence:
* :class:`Similarity` — the count of the key's recent queries within a small
  distance of the new one, on a reduced representation (:func:`reduce`); it holds
  against per-query Gaussian noise, spreading queries over time and mixing in benign
  queries (it counts queries, not seconds). ``min_neighbours`` is met over the last
  ``window`` queries (default 1,000): benign neighbours accumulate with the number of
  queries remembered (on 10,000 distinct table rows a whole-history count flagged 29
  per 1,000 at the radius calibrated on 1,000-query streams, the window none), a
  search's queries cluster in time. A search diluted below ``min_neighbours`` per
  ``window`` (one query in 50 at the defaults) answers to ``long_neighbours``, a
  count over the whole ``history`` that ``gateway calibrate`` sets above the benign
  counts it extrapolates to a full history.
  ``similarity.projection`` (set by ``gateway calibrate`` when no radius on all values
  separates benign inputs from a noisy search, as on tabular rows) measures the
  distance along the leading principal axes of the deployment's benign inputs only;
* :class:`Prada` — Juuti, Szyller, Marchal & Asokan, "PRADA: Protecting against DNN
  Model Stealing Attacks" (EuroS&P 2019, arXiv:1805.02628). For each query the L2
  distance to the closest earlier query of the same predicted class is recorded;
  queries farther than the class threshold grow that class's reference set and
  raise the threshold to ``max(T, mean - std)`` of the set's distances. Natural
  queries give roughly normally distributed distances; synthetic extraction queries
  (small steps around seeds) do not. Once ``min_queries`` distances exist, a
  Shapiro-Wilk statistic ``W < delta`` flags the key. The paper tests after every
  query; we test after every ``test_every`` queries (default 10) because one test
  costs about 0.5 ms. ``delta`` 0.85 is calibrated on digits (benign streams of 100
  held-out digits had W >= 0.91); the paper tuned it per dataset.

Memory per active key is bounded by the histories, not by traffic: at the defaults
5.4 MB for 8x8 digits and 8.6 MB for 3x32x32 images (Blacklight 0.7-0.8 MB of it;
12-16 MB at a Blacklight history of 10,000)
(:meth:`Monitor.nbytes`; figures in ``docs/benchmarks/gateway.md``). Detection and
false-alarm rates: ``benchmarks/gateway_load.py``.

Example::

    monitor = Monitor(config.detection, shape=[1, 8, 8])
    flagged = monitor.inspect("alice", x_batch, labels)   # e.g. {"similarity": [3, 4]}
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import math
import threading
from collections import deque
from typing import Any

import numpy as np
from scipy import special, stats

from mlwarden.serve.config import Blacklight as BlacklightConfig
from mlwarden.serve.config import Detection
from mlwarden.serve.config import Prada as PradaConfig
from mlwarden.serve.config import Similarity as SimilarityConfig

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio)
_SKETCH = 16  # values per query in the similarity detector's first, coarse scan
_MISSING = itertools.repeat(-1)  # dict.get's default for every hash, without a lambda


def fingerprint(
    x: np.ndarray, quantization: float, window: int, top: int, silence: float = 0.0
) -> frozenset[int]:
    """The fingerprint of :func:`_fingerprint` as a set of ints (for tests and tools)."""
    return frozenset(_fingerprint(x, quantization, window, top, silence).tolist())


@functools.lru_cache(maxsize=16)
def _powers(n: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``Q^t`` for ``t < n`` and ``P^(i + w)`` for each of the ``n - w + 1`` windows (mod 2^64)."""
    inverse = np.uint64(pow(int(_MULTIPLIER), -1, 1 << 64))
    with np.errstate(over="ignore"):
        q_pow = np.cumprod(np.full(n, inverse, dtype=np.uint64), dtype=np.uint64) * _MULTIPLIER
        p_pow = np.cumprod(np.full(n, _MULTIPLIER, dtype=np.uint64), dtype=np.uint64)
    q_pow.flags.writeable = False
    p_pow = p_pow[w - 1 :]  # P^(w) for the first window
    p_pow.flags.writeable = False
    return q_pow, p_pow


def _fingerprint(
    x: np.ndarray, quantization: float, window: int, top: int, silence: float = 0.0
) -> np.ndarray:
    """Blacklight's probabilistic fingerprint of one input: its top-``top`` window hashes.

    Values are binned as ``floor(x / quantization)`` (input units), flattened in C
    order, and every run of ``window`` consecutive bins (stride 1) is hashed. The paper
    hashes windows with SHA-256; we use a 64-bit polynomial hash over the bins (one
    vectorised pass instead of one SHA-256 call per window). Any hash with negligible
    collisions serves: a fingerprint is compared only with the same key's own history,
    so a crafted collision could only flag the crafter.

    ``silence`` > 0 (input units) is a gate: a window whose values all lie strictly
    within ``(-silence, silence)`` is not hashed. Pauses in speech quantise to the same
    few bins in every clip, so distinct clips shared their hashes (:class:`Blacklight`).
    Gating hides nothing from the detector: a perturbation big enough to change a bin
    there makes the window loud, and the windows it does not touch still match.
    """
    raw = np.asarray(x, dtype=np.float64).ravel()
    flat = np.floor(raw / quantization).astype(np.int64)
    w = min(window, flat.size)
    q_pow, p_pow = _powers(flat.size, w)
    with np.errstate(over="ignore"):
        # Rolling form of sum_j flat[i + j] * P^(w - j) (mod 2^64): with Q = 1/P mod 2^64,
        # prefix sums of flat[t] * Q^t give each window in O(1), times P^(i + w).
        prefix = np.cumsum(flat.view(np.uint64) * q_pow, dtype=np.uint64)
        sums = prefix[w - 1 :].copy()
        sums[1:] -= prefix[: len(prefix) - w]
        hashes = sums * p_pow
        hashes ^= hashes >> np.uint64(29)
        hashes *= _MULTIPLIER
    if silence > 0:
        loud = np.concatenate(([0], np.cumsum(np.abs(raw) >= silence)))
        hashes = hashes[loud[w:] > loud[: len(loud) - w]]
    if not len(hashes):
        return hashes
    hashes.sort()  # np.sort and a mask: np.unique hashes first, several times slower here
    distinct = hashes[np.append(hashes[1:] != hashes[:-1], True)]
    return distinct[-top:]  # sorted ascending, distinct: the largest ``top``


class Blacklight:
    """One key's Blacklight history: the fingerprints of its last ``history`` queries.

    Memory is two flat arrays instead of Python objects per hash: every remembered hash
    with the id of the last query that produced it, sorted (12 bytes a hash, at most
    ``history * top`` of them: 0.6 MB at the defaults, 38 KB at a history of 64), plus a
    small dict of the hashes of the last ``_MERGE`` queries that is merged into them in
    one sort. Lookups are
    binary searches. A match with the most recent earlier query carrying a hash is
    what counts: in a stream of near-duplicates that is the previous query.
    """

    _MERGE = 256
    _WINDOW = 64  # queries over which matches are counted

    def __init__(self, config: BlacklightConfig, silence: float = 0.0) -> None:
        self.config = config
        self.silence = silence  # the gate of :func:`_fingerprint`, input units
        self._hashes = np.empty(0, dtype=np.uint64)
        self._ids = np.empty(0, dtype=np.int64)
        self._recent: dict[int, int] = {}
        self._recent_queries = 0
        self._next = 0
        self._matches: deque[bool] = deque(maxlen=self._WINDOW)
        self.recent_matches = 0

    def observe(self, x: np.ndarray) -> int:
        """Add one query; return how many of its hashes the key's remembered queries share.

        Only the newest query of each hash is kept, so the hashes shared with one earlier
        near-duplicate spread over its successors: all remembered hashes count.
        """
        c = self.config
        fp = _fingerprint(x, c.quantization, c.window, c.top, self.silence)
        oldest = self._next - c.history
        hashes = fp.tolist()
        recent = self._recent
        # every query in ``recent`` is newer than every query in the sorted arrays, so a
        # hash's newest query is the larger of the two ids (-1: not there)
        ids = np.fromiter(map(recent.get, hashes, _MISSING), dtype=np.int64, count=len(hashes))
        stored = self._hashes
        if len(stored):
            pos = np.searchsorted(stored, fp)
            np.minimum(pos, len(stored) - 1, out=pos)
            older = self._ids[pos]
            older[stored[pos] != fp] = -1
            np.maximum(ids, older, out=ids)
        best = int(np.count_nonzero(ids >= max(oldest, 0)))
        qid = self._next
        self._next += 1
        # One match is what a benign client re-sending a slightly different copy of an
        # input produces; an attack's queries match, query after query.
        self._matches.append(best >= c.threshold)
        self.recent_matches = sum(self._matches) if best >= c.threshold else 0
        recent.update(dict.fromkeys(hashes, qid))
        self._recent_queries += 1
        if self._recent_queries >= self._MERGE:
            self._merge()
        return best

    def _merge(self) -> None:
        """Fold the recent hashes into the sorted arrays, dropping forgotten queries.

        Linear in the history (binary searches and one insert), not a sort of it: at
        the defaults the arrays hold up to 500,000 hashes and a merge every 256
        queries costs about a millisecond.
        """
        keep = self._ids >= self._next - self.config.history
        hashes, ids = self._hashes, self._ids
        if not keep.all():
            hashes, ids = hashes[keep], ids[keep]
        else:
            ids = ids.copy()  # a dump() may still hold the old arrays
        new_h = np.fromiter(self._recent.keys(), dtype=np.uint64, count=len(self._recent))
        new_i = np.fromiter(self._recent.values(), dtype=np.int64, count=len(self._recent))
        order = np.argsort(new_h)
        new_h, new_i = new_h[order], new_i[order]
        pos = np.searchsorted(hashes, new_h)
        hit = np.zeros(len(new_h), dtype=bool)
        if len(hashes):
            inside = pos < len(hashes)
            hit[inside] = hashes[pos[inside]] == new_h[inside]
        ids[pos[hit]] = new_i[hit]  # a hash seen again: remember its newest query
        miss = ~hit
        self._hashes = np.insert(hashes, pos[miss], new_h[miss])
        self._ids = np.insert(ids, pos[miss], new_i[miss])
        self._recent = {}
        self._recent_queries = 0

    def flags(self, x: np.ndarray) -> bool:
        """Whether ``x`` matches and is at least the ``chain``-th match of the last 64 queries."""
        self.observe(x)
        return self.recent_matches >= self.config.chain

    def nbytes(self) -> int:
        """Approximate memory held, bytes."""
        return self._hashes.nbytes + self._ids.nbytes + len(self._recent) * 100

    def dump(self) -> dict[str, np.ndarray]:
        self._merge()
        return {"hashes": self._hashes, "ids": self._ids, "next": np.array([self._next])}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self._hashes = state["hashes"].astype(np.uint64)
        self._ids = state["ids"].astype(np.int64)
        self._next = int(state["next"][0])


class Similarity:
    """One key's near-neighbour count on a reduced representation, robust to noise.

    Blacklight's hashes of quantised windows break when an attacker adds fresh noise to
    every query (Feng et al., "Stateful Defenses for Machine Learning Models Are Not Yet
    Secure Against Black-box Attacks", CCS 2023, arXiv:2303.06280, show this for
    Blacklight and PIHA). This detector keeps the key's last ``history`` queries as
    reduced vectors (:func:`reduce`) and counts how many lie within ``radius`` of a new
    query, as root-mean-square distance per value in units of the input range:
    :meth:`observe` returns the count among the last ``window`` queries and leaves the
    whole history's in :attr:`total`. A
    random search around one input (with or without per-query Gaussian noise up to
    sigma ~0.06 of the range) puts nearly every query within the radius of the others,
    so the count grows by one per query and reaches ``min_neighbours`` after about
    that many queries; distinct natural inputs rarely have more than a handful of
    neighbours that close (12 at most among all 1,797 digits at the default radius).
    Exact repeats never reach it: :class:`Monitor` drops them first.

    Cost: the history is first scanned on a sketch of ``_SKETCH`` values per query
    (sums over blocks of the reduced vector, scaled by one over the square root of the
    block length: an orthogonal projection, so its distance is a lower bound of the
    true one and no neighbour is missed); only the queries the sketch cannot rule out
    are compared in full. Distinct benign queries leave few such candidates, so a
    query costs a scan of ``history x 16`` floats instead of ``history x dims``.

    Memory: ``history * (dims + 19) * 4`` bytes (3.3 MB at 10,000 queries of 64 values).
    """

    def __init__(self, config: SimilarityConfig, dims: int) -> None:
        self.config = config
        self._ring = np.zeros((config.history, dims), dtype=np.float32)
        self._norms = np.zeros(config.history, dtype=np.float32)
        k = min(_SKETCH, dims)
        self._starts = (np.arange(k, dtype=np.int64) * dims) // k
        self._scale = (1.0 / np.sqrt(np.diff(np.append(self._starts, dims)))).astype(np.float32)
        # The sketches stored by column (k + 1, history), the last row minus half each
        # sketch's squared norm: one product of the query's (s, 1) with it gives
        # ``s . h - |h|^2 / 2`` for every remembered h, over long contiguous rows (a
        # (history, k) layout made BLAS walk 10,000 rows of 16 values: ~2.5x slower).
        self._sketch = np.zeros((k + 1, config.history), dtype=np.float32)
        self._query = np.ones(k + 1, dtype=np.float32)  # (s, 1), reused
        self._dots = np.empty(config.history, dtype=np.float32)  # scratch, no allocation
        self._filled = 0
        self._next = 0
        self.total = 0  # the last query's neighbours over the whole history

    def _sketch_of(self, v: np.ndarray) -> np.ndarray:
        return np.add.reduceat(v, self._starts, axis=-1) * self._scale

    def observe(self, v: np.ndarray) -> int:
        """Add one reduced query; return how many of the last ``window`` queries lie within
        the radius (those of the whole history: :attr:`total`)."""
        n = self._filled
        count = 0
        limit = (self.config.radius**2) * len(v)
        s = self._sketch_of(v)
        k = len(s)
        query = self._query
        query[:k] = s
        half = float(s @ s) / 2
        self.total = 0
        if n:
            dots = self._dots[:n]
            np.matmul(query, self._sketch[:, :n], out=dots)
            # sketch distance^2 = 2 half + |s|^2 - 2 dot < limit; a little slack for rounding
            cand = np.flatnonzero(dots > half - (limit * 1.001 + 1e-4) / 2)
            if len(cand):
                norm = float(v @ v)
                if 4 * len(cand) > n:  # most are candidates (an attack): a slice, no gather
                    d2 = self._norms[:n] + norm - 2.0 * (self._ring[:n] @ v)
                    near = np.flatnonzero(d2 < limit)
                else:
                    d2 = self._norms[cand] + norm - 2.0 * (self._ring[cand] @ v)
                    near = cand[d2 < limit]
                self.total = len(near)
                count = self._within_window(near)
        slot = self._next % self.config.history
        self._ring[slot] = v
        self._norms[slot] = v @ v
        self._sketch[:k, slot] = s
        self._sketch[k, slot] = -half
        self._next += 1
        self._filled = min(self._filled + 1, self.config.history)
        return count

    def _within_window(self, slots: np.ndarray) -> int:
        """How many of these ring slots hold one of the last ``window`` queries."""
        h, w = self.config.history, self.config.window
        if w >= self._filled:
            return len(slots)
        # the query in slot s is (next - s - 1) % h + 1 queries old (1: the previous one)
        age = (self._next - slots - 1) % h + 1
        return int(np.count_nonzero(age <= w))

    def flags(self, v: np.ndarray) -> bool:
        """Whether ``v`` has ``min_neighbours`` among the last ``window`` queries, or
        ``long_neighbours`` among the whole history."""
        c = self.config
        recent = self.observe(v)
        return recent >= c.min_neighbours or self.total >= (c.long_neighbours or math.inf)

    def nbytes(self) -> int:
        parts = (self._ring, self._norms, self._sketch, self._dots)
        return sum(p.nbytes for p in parts)

    def dump(self) -> dict[str, np.ndarray]:
        """The filled part of the history in float16 (a summary: 2 bytes a value)."""
        ring = self._ring[: self._filled].astype(np.float16)
        return {"ring": ring, "meta": np.array([self._filled, self._next])}

    def load(self, state: dict[str, np.ndarray]) -> None:
        ring = state["ring"].astype(np.float32)
        if ring.ndim != 2 or ring.shape[1] != self._ring.shape[1]:
            return  # the config changed: start afresh rather than compare unlike vectors
        n = min(len(ring), len(self._ring))
        self._ring[:n] = ring[:n]
        self._norms[:n] = np.einsum("ij,ij->i", ring[:n], ring[:n])
        sketch = self._sketch_of(ring[:n])
        k = sketch.shape[1]
        self._sketch[:k, :n] = sketch.T
        self._sketch[k, :n] = -np.einsum("ij,ij->i", sketch, sketch) / 2
        filled, nxt = (int(v) for v in state["meta"])
        self._filled, self._next = min(filled, n), nxt % len(self._ring)


def reduce(x: np.ndarray, max_dims: int, scale: float) -> np.ndarray:
    """A query as at most ``max_dims`` float32 values in units of the input range.

    Inputs with more values are averaged over consecutive blocks of the C-order
    flattening (rows of an image: a low-pass filter that also divides white noise by
    the square root of the block length); ``scale`` is the width of the input range.

    Example::

        reduce(np.ones((3, 32, 32)), 128, 1.0).shape   # (128,): blocks of 24 values
    """
    flat = np.asarray(x, dtype=np.float32).ravel() / np.float32(scale)
    n = flat.size
    if n <= max_dims:
        return flat
    # exactly max_dims blocks of floor or ceil(n / max_dims) values: the detectors' rings
    # are sized max_dims (blocks of one fixed length left 127 values for 8,000 inputs)
    starts = (np.arange(max_dims, dtype=np.int64) * n) // max_dims
    sums = np.add.reduceat(flat.astype(np.float64), starts)
    return (sums / np.diff(np.append(starts, n))).astype(np.float32)


_FLOOR_DB = 96.0  # the envelope's floor: the dynamic range of 16-bit PCM


def reduce_audio(x: np.ndarray, max_dims: int, scale: float) -> np.ndarray:
    """A clip as the log-energy envelope of ``max_dims`` frames, in [0, 1].

    Block means (:func:`reduce`) average a waveform to about 0, so every clip looks
    near every other. Instead each of at most ``max_dims`` consecutive frames of the
    C-order flattening (about 8 ms each for 1 s at 8 kHz and 128 frames) becomes its
    mean power in dB relative to full scale (a constant of amplitude
    ``scale / 2``), clipped at -96 dB (16-bit PCM) and mapped to [0, 1] (0: silence).
    Distinct utterances differ in where their syllables and pauses fall; a clip and a
    copy with small added noise differ only in the quiet frames. Unit: fraction of the
    96 dB span, so the similarity radius keeps its meaning (RMS per value). Clips that
    are silence throughout all look alike (their envelopes are the noise floor).

    Example::

        reduce_audio(np.zeros(8000), 128, 2.0)   # 128 zeros: silence
    """
    flat = np.asarray(x, dtype=np.float64).ravel() / (scale / 2.0)
    n = flat.size
    frames = min(max_dims, n)
    starts = (np.arange(frames, dtype=np.int64) * n) // frames
    power = np.add.reduceat(flat * flat, starts) / np.diff(np.append(starts, n))
    db = 10.0 * np.log10(np.maximum(power, 10.0 ** (-_FLOOR_DB / 10.0)))
    return (np.clip(db, -_FLOOR_DB, 0.0) / _FLOOR_DB + 1.0).astype(np.float32)


class Prada:
    """One key's PRADA state: per-class reference sets, thresholds and distances.

    Queries arrive reduced (:func:`reduce`); the reference sets of all classes together
    hold at most ``history`` vectors (``history * dims * 4`` bytes: 1.3 MB at the
    defaults for 64 values).
    """

    def __init__(self, config: PradaConfig) -> None:
        self.config = config
        self._sets: dict[int, np.ndarray] = {}  # growing reference set per class, rows
        self._sizes: dict[int, int] = {}
        self._moments: dict[int, list[float]] = {}
        self._thresholds: dict[int, float] = {}
        # the last ``history`` distances in a ring (oldest overwritten first)
        self._dists = np.zeros(config.history, dtype=np.float64)
        self._n_dists = 0
        self._total = 0
        self._pending = 0
        self.last_w: float | None = None

    def observe(self, x: np.ndarray, label: int) -> None:
        """Add one query with its predicted class (updates the distance record)."""
        v = np.asarray(x, dtype=np.float32).ravel()
        self._pending += 1
        ref = self._sets.get(label)
        if ref is None:
            if self._total >= self.config.history:
                return
            ref = np.empty((16, v.size), dtype=np.float32)
            ref[0] = v
            self._sets[label] = ref
            self._sizes[label] = 1
            self._total += 1
            self._moments[label] = [0, 0.0, 0.0]
            self._thresholds[label] = 0.0
            return
        n = self._sizes[label]
        diff = ref[:n] - v
        d = math.sqrt(float(np.einsum("ij,ij->i", diff, diff).min()))
        self._dists[self._n_dists % len(self._dists)] = d
        self._n_dists += 1
        if d > self._thresholds[label] and self._total < self.config.history:
            if n == len(ref):
                grow = min(len(ref), self.config.history)
                ref = self._sets[label] = np.concatenate([ref, np.empty((grow, v.size), ref.dtype)])
            ref[n] = v
            self._sizes[label] = n + 1
            self._total += 1
            # running count, sum and sum of squares of the set's distances: mean - std in O(1)
            m = self._moments[label]
            m[0] += 1
            m[1] += d
            m[2] += d * d
            mean = m[1] / m[0]
            std = math.sqrt(max(m[2] / m[0] - mean * mean, 0.0))
            self._thresholds[label] = max(self._thresholds[label], mean - std)

    def test(self) -> float | None:
        """Shapiro-Wilk W of the distances, or ``None`` when too few or tested recently.

        The test runs once ``test_every`` new queries have arrived (it costs about half a
        millisecond), so a flag comes at most ``test_every - 1`` queries late.
        """
        n = min(self._n_dists, len(self._dists))
        if n < self.config.min_queries or self._pending < self.config.test_every:
            return None
        self._pending = 0
        self.last_w = shapiro_w(self._dists[:n])  # order does not matter: it sorts
        return self.last_w

    def flags(self, x: np.ndarray, label: int) -> bool:
        self.observe(x, label)
        w = self.test()
        return w is not None and w < self.config.delta

    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._sets.values()) + self._dists.nbytes


@functools.lru_cache(maxsize=8)
def _shapiro_coefficients(n: int) -> np.ndarray:
    """Royston's (1995, AS R94) approximate Shapiro-Wilk coefficients for ``n >= 6``.

    The same algorithm as ``scipy.stats.shapiro`` (Fortran ``swilk``), returned as the
    full antisymmetric vector for sorted data; cached because a key's distance record
    has the same length (``history``) once full, so each test is a sort and a dot.
    """
    half = n // 2
    m = special.ndtri((np.arange(1, half + 1) - 0.375) / (n + 0.25))  # negative, ascending
    summ2 = 2.0 * float(m @ m)
    ssumm2 = math.sqrt(summ2)
    u = 1.0 / math.sqrt(n)
    a1 = -m[0] / ssumm2 + np.polyval([-2.706056, 4.434685, -2.07119, -0.147981, 0.221157, 0.0], u)
    a2 = -m[1] / ssumm2 + np.polyval([-3.582633, 5.682633, -1.752461, -0.293762, 0.042981, 0.0], u)
    fac = math.sqrt((summ2 - 2 * m[0] ** 2 - 2 * m[1] ** 2) / (1 - 2 * a1**2 - 2 * a2**2))
    a = -m / fac
    a[0], a[1] = a1, a2
    full = np.zeros(n)
    full[:half] = -a
    full[n - half :] = a[::-1]
    full.flags.writeable = False
    return full


def shapiro_w(x: np.ndarray) -> float:
    """The Shapiro-Wilk statistic W of a sample (Shapiro & Wilk 1965; Royston 1995).

    Equal to ``scipy.stats.shapiro(x).statistic`` (to ~1e-6) at a fraction of its cost
    for the sizes PRADA tests again and again: coefficients are cached per size. A
    sample with no spread gives 0 (as far from normal as it gets).

    Example::

        shapiro_w(np.random.default_rng(0).normal(size=500))   # close to 1
    """
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = len(x)
    if n < 3:
        raise ValueError("the Shapiro-Wilk test needs at least 3 values")
    if x[-1] == x[0]:
        return 0.0
    if n < 6:  # another polynomial for tiny samples: scipy has it, and it is cheap there
        return float(stats.shapiro(x).statistic)
    a = _shapiro_coefficients(n)
    xc = x - x.mean()
    num = float(a @ xc)
    return num * num / (float(a @ a) * float(xc @ xc))


def _digest(x: np.ndarray) -> int:
    return int.from_bytes(hashlib.blake2b(x.tobytes(), digest_size=8).digest(), "little")


def _chained(blacklight: Blacklight, x: np.ndarray, chain: int) -> bool:
    """:meth:`Blacklight.flags` with this key's chain length."""
    blacklight.observe(x)
    return blacklight.recent_matches >= chain


class _Recent:
    """The digests of a key's last ``size`` distinct inputs (exact-repeat filter)."""

    def __init__(self, size: int) -> None:
        self._set: set[int] = set()
        self._order: deque[int] = deque()
        self.size = size

    def seen(self, digest: int) -> bool:
        """Whether ``digest`` is remembered; remember it if not."""
        if digest in self._set:
            return True
        self._set.add(digest)
        self._order.append(digest)
        if len(self._order) > self.size:
            self._set.discard(self._order.popleft())
        return False


class _KeyState:
    def __init__(self, config: Detection, dims: int, silence: float, sim_dims: int) -> None:
        self.recent = _Recent(max(config.similarity.history, config.blacklight.history))
        bl = config.blacklight
        self.blacklight = Blacklight(bl, silence) if bl.enabled else None
        self.similarity = (
            Similarity(config.similarity, sim_dims) if config.similarity.enabled else None
        )
        self.prada = Prada(config.prada) if config.prada.enabled else None
        self.lock = threading.Lock()
        self.dims = dims
        self.unsaved = 0

    def nbytes(self) -> int:
        parts = (self.blacklight, self.similarity, self.prada)
        return len(self.recent._order) * 120 + sum(p.nbytes() for p in parts if p is not None)


class Monitor:
    """Per-key detectors; :meth:`inspect` returns the kinds of alert a request raised.

    An input identical to one the key sent recently (a retry, or a benign client
    drawing from a fixed set) is not fed to any detector: repeating a query teaches an
    attacker nothing, so it is not probing, and ``block`` never fires on a retry.

    A key whose client legitimately resends one input with fresh noise (test-time
    augmentation, client-side smoothing) looks, query for query, like the start of a
    noisy random search around that input, and is flagged after 5-50 such copies
    (Blacklight's chain at small noise, similarity's ``min_neighbours`` at larger):
    the gateway cannot tell them apart and fails closed. Its operator grants that key
    an allowance instead (``keys.NAME.near_duplicates: N`` in the config, kept in
    :attr:`allowances`): N replaces the similarity threshold and Blacklight's chain
    for that key only (N above 64 switches Blacklight off for it, since matches are
    counted over 64 queries; PRADA still runs). Every other key is unaffected.

    Args:
        config: the detection section of the gateway config.
        shape: the shape of one input, when declared (sizes the reduced vectors).
        scale: the width of the declared input range (distances are in its units).
        modality: ``input.modality``; ``"audio"`` summarises inputs with
            :func:`reduce_audio` instead of :func:`reduce`.
    """

    def __init__(
        self,
        config: Detection,
        shape: list[int] | None = None,
        scale: float = 1.0,
        modality: str = "tensor",
    ) -> None:
        self.config = config
        self.scale = scale
        # audio: a log-energy envelope, since block means flatten a waveform to ~0
        self._reduce = reduce_audio if modality == "audio" else reduce
        bl = config.blacklight
        # audio: windows within one bin of zero (pauses) are not hashed; see _fingerprint
        default_gate = bl.quantization if modality == "audio" else 0.0
        self.silence = default_gate if bl.silence is None else bl.silence
        self.dims = min(math.prod(shape), config.similarity.max_dims) if shape else None
        self._mean: np.ndarray | None = None
        self._axes: np.ndarray | None = None
        self._projection = 0  # digest of the projection: a stored history must match it
        proj = config.similarity.projection
        if proj is not None:
            if self.dims != len(proj.mean):
                from mlwarden.core.errors import UserError

                raise UserError(
                    f"detection.similarity.projection takes {len(proj.mean)} values, but the "
                    f"reduced input has {self.dims or 'an undeclared number of'}; declare "
                    "input.shape and calibrate again ('mlwarden gateway calibrate')"
                )
            self._mean = np.asarray(proj.mean, dtype=np.float32)
            self._axes = np.ascontiguousarray(np.asarray(proj.components, dtype=np.float32).T)
            self._projection = _digest(np.concatenate([self._mean, self._axes.ravel()]))
        self._keys: dict[str, _KeyState] = {}
        self._guard = threading.Lock()
        #: key -> near-duplicate allowance (similarity threshold and Blacklight chain)
        self.allowances: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        c = self.config
        return c.blacklight.enabled or c.prada.enabled or c.similarity.enabled

    def _state(self, key: str, dims: int) -> _KeyState:
        with self._guard:
            state = self._keys.get(key)
            if state is None:
                sim_dims = dims if self._axes is None else self._axes.shape[1]
                state = self._keys[key] = _KeyState(self.config, dims, self.silence, sim_dims)
            return state

    def summarise(self, x: np.ndarray) -> np.ndarray:
        """One input as the detectors' reduced vector (:func:`reduce` or :func:`reduce_audio`)."""
        return self._reduce(x, self.config.similarity.max_dims, self.scale)

    def project(self, v: np.ndarray) -> np.ndarray:
        """A reduced vector as the similarity detector measures it (``projection``, if set)."""
        if self._axes is None or self._mean is None:
            return v
        return (v - self._mean) @ self._axes

    def inspect(self, key: str, x: np.ndarray, labels: np.ndarray) -> dict[str, list[int]]:
        """Feed a batch of queries ``x`` (N, ...) with their predicted ``labels`` (N,).

        Returns detector kind -> indices of the flagged inputs (kinds with none left out).
        """
        found: dict[str, list[int]] = {}
        allowance = self.allowances.get(key)
        c = self.config
        need = allowance or c.similarity.min_neighbours
        # the whole history's bar: never below the allowance (a granted client's copies)
        long_need = max(c.similarity.long_neighbours or math.inf, allowance or 0)
        chain = allowance or c.blacklight.chain
        max_dims = self.config.similarity.max_dims
        dims = self.dims or min(int(np.prod(x.shape[1:])), max_dims)
        state = self._state(key, dims)
        with state.lock:
            for i, (xi, li) in enumerate(zip(x, labels, strict=True)):
                xi = np.ascontiguousarray(xi, dtype=np.float32)
                if state.recent.seen(_digest(xi)):
                    continue
                state.unsaved += 1
                v = self._reduce(xi, max_dims, self.scale)
                if state.blacklight is not None and _chained(state.blacklight, xi, chain):
                    found.setdefault("blacklight", []).append(i)
                sim = state.similarity
                if sim is not None and (
                    sim.observe(self.project(v)) >= need or sim.total >= long_need
                ):
                    found.setdefault("similarity", []).append(i)
                if state.prada is not None and state.prada.flags(v, int(li)):
                    found.setdefault("prada", []).append(i)
        return found

    def dump(self, key: str) -> bytes | None:
        """The key's detector histories as one ``.npz`` blob (``None``: nothing seen yet)."""
        state = self._keys.get(key)
        if state is None:
            return None
        arrays: dict[str, Any] = {
            "recent": np.array(state.recent._order, dtype=np.uint64),
            "dims": np.array([state.dims]),
            "projection": np.array([self._projection], dtype=np.uint64),
        }
        with state.lock:
            # Blacklight's hashes (up to 8 MB) are not stored: its matches restart.
            if state.similarity is not None:
                arrays.update({f"similarity.{k}": v for k, v in state.similarity.dump().items()})
            state.unsaved = 0
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def load(self, key: str, blob: bytes) -> None:
        """Restore what :meth:`dump` wrote; a blob that does not fit the config is ignored.

        Stored: the exact-repeat filter and the similarity history (float16, a few MB).
        Blacklight's hashes and PRADA's reference sets start afresh after a restart.
        """
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            dims = int(arrays["dims"][0])
        except (ValueError, KeyError, OSError, EOFError):
            return
        state = self._state(key, dims)
        with state.lock:
            for digest in arrays["recent"].tolist():
                state.recent.seen(int(digest))
            part = {k[11:]: v for k, v in arrays.items() if k.startswith("similarity.")}
            stored = arrays.get("projection", np.zeros(1, dtype=np.uint64))
            if int(stored[0]) != self._projection:
                part = {}  # measured along other axes: not comparable, start afresh
            if state.similarity is not None and part:
                with contextlib.suppress(KeyError, ValueError, IndexError):
                    state.similarity.load(part)  # a history of another shape: start afresh

    def unsaved(self, key: str) -> int:
        """Distinct queries of ``key`` seen since its last :meth:`dump`."""
        state = self._keys.get(key)
        return 0 if state is None else state.unsaved

    def nbytes(self, key: str) -> int:
        """Approximate memory held for ``key``, bytes."""
        state = self._keys.get(key)
        return 0 if state is None else state.nbytes()
