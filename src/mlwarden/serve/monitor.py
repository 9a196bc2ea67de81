"""Stateful attack detection: watch each key's stream of queries, not single inputs.

Two detectors, both per key:

* :class:`Blacklight` — Li, Shan, Wenger, Zhang, Zheng & Zhao, "Blacklight: Scalable
  Defense for Neural Networks against Query-Based Black-Box Attacks" (USENIX Security
  2022, arXiv:2006.14042). Query-based attacks (Square, HopSkipJump, NES, boundary
  attacks) send long runs of near-identical inputs. Each query is quantised (bins of
  ``quantization`` input units), flattened, cut into sliding windows of ``window``
  values (stride 1), every window hashed (the paper uses SHA-256; see
  :func:`fingerprint`), and the ``top`` largest distinct hashes kept as the query's
  fingerprint. A query whose fingerprint shares
  at least ``threshold`` hashes with one earlier query of the same key is flagged.
  The paper's settings for 32x32 CIFAR images are bins of 50/255, windows of 20,
  the top 50 hashes and a threshold of 25; our defaults (bins of 0.1, windows of 20,
  top 50, threshold 20) are calibrated for small inputs such as 8x8 digits, where an
  input has only 45 windows (see ``benchmarks/gateway_load.py``).
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

Example::

    monitor = Monitor(config.detection)
    flagged = monitor.inspect("alice", x_batch, labels)   # e.g. {"blacklight": [3, 4]}
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque

import numpy as np
from scipy import stats

from mlwarden.serve.config import Blacklight as BlacklightConfig
from mlwarden.serve.config import Detection
from mlwarden.serve.config import Prada as PradaConfig

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio)


def fingerprint(x: np.ndarray, quantization: float, window: int, top: int) -> frozenset[int]:
    """Blacklight's probabilistic fingerprint of one input: its top-``top`` window hashes.

    Values are binned as ``floor(x / quantization)`` (input units), flattened in C
    order, and every run of ``window`` consecutive bins (stride 1) is hashed. The paper
    hashes windows with SHA-256; we use a 64-bit polynomial hash over the bins (one
    vectorised pass instead of one SHA-256 call per window). Any hash with negligible
    collisions serves: a fingerprint is compared only with the same key's own history,
    so a crafted collision could only flag the crafter.
    """
    flat = np.floor(np.asarray(x, dtype=np.float64).ravel() / quantization).astype(np.int64)
    w = min(window, flat.size)
    windows = np.lib.stride_tricks.sliding_window_view(flat.view(np.uint64), w)
    powers = _MULTIPLIER ** np.arange(w, 0, -1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        hashes = (windows * powers).sum(axis=1, dtype=np.uint64)
        hashes ^= hashes >> np.uint64(29)
        hashes *= _MULTIPLIER
    uniq = np.unique(hashes)  # sorted ascending, distinct
    return frozenset(uniq[-top:].tolist())


class Blacklight:
    """One key's Blacklight history: fingerprints of its last ``history`` queries.

    Each hash keeps the ids of at most ``bucket`` recent queries that produced it, so a
    stream of identical queries costs O(top * bucket) per query, not O(history): in a
    stream of near-duplicates the queries sharing a hash are the recent ones, and a
    match with any one of them is enough to flag.
    """

    def __init__(self, config: BlacklightConfig, bucket: int = 8) -> None:
        self.config = config
        self.bucket = bucket
        self._table: dict[int, deque[int]] = {}
        self._order: deque[tuple[int, frozenset[int]]] = deque()
        self._next = 0

    def observe(self, x: np.ndarray) -> int:
        """Add one query; return the most hashes it shares with any remembered query."""
        c = self.config
        fp = fingerprint(x, c.quantization, c.window, c.top)
        oldest = self._order[0][0] if self._order else 0
        table = self._table
        hits = [i for h in fp if h in table for i in table[h] if i >= oldest]
        best = max(Counter(hits).values()) if hits else 0
        qid = self._next
        self._next += 1
        for h in fp:
            ids = self._table.get(h)
            if ids is None:
                ids = self._table[h] = deque(maxlen=self.bucket)
            ids.append(qid)
        self._order.append((qid, fp))
        if len(self._order) > c.history:
            old, old_fp = self._order.popleft()
            for h in old_fp:
                ids = self._table.get(h)
                if ids is not None and ids and ids[-1] <= old:
                    del self._table[h]  # every id left in it is evicted
        return best

    def flags(self, x: np.ndarray) -> bool:
        return self.observe(x) >= self.config.threshold


class Prada:
    """One key's PRADA state: per-class reference sets, thresholds and distances."""

    def __init__(self, config: PradaConfig) -> None:
        self.config = config
        self._sets: dict[int, np.ndarray] = {}  # growing reference set per class, rows
        self._sizes: dict[int, int] = {}
        self._moments: dict[int, list[float]] = {}
        self._thresholds: dict[int, float] = {}
        self._dists: deque[float] = deque(maxlen=config.history)
        self._pending = 0
        self.last_w: float | None = None

    def observe(self, x: np.ndarray, label: int) -> None:
        """Add one query with its predicted class (updates the distance record)."""
        v = np.asarray(x, dtype=np.float64).ravel()
        self._pending += 1
        ref = self._sets.get(label)
        if ref is None:
            ref = np.empty((16, v.size))
            ref[0] = v
            self._sets[label] = ref
            self._sizes[label] = 1
            self._moments[label] = [0, 0.0, 0.0]
            self._thresholds[label] = 0.0
            return
        n = self._sizes[label]
        diff = ref[:n] - v
        d = math.sqrt(float(np.einsum("ij,ij->i", diff, diff).min()))
        self._dists.append(d)
        if d > self._thresholds[label] and n < self.config.history:
            if n == len(ref):
                ref = self._sets[label] = np.concatenate([ref, np.empty_like(ref)])
            ref[n] = v
            self._sizes[label] = n + 1
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
        if len(self._dists) < self.config.min_queries or self._pending < self.config.test_every:
            return None
        self._pending = 0
        dists = np.fromiter(self._dists, dtype=np.float64)
        if np.ptp(dists) == 0:
            self.last_w = 0.0  # all distances equal: as far from normal as it gets
        else:
            self.last_w = float(stats.shapiro(dists).statistic)
        return self.last_w

    def flags(self, x: np.ndarray, label: int) -> bool:
        self.observe(x, label)
        w = self.test()
        return w is not None and w < self.config.delta


class Monitor:
    """Per-key detectors; :meth:`inspect` returns the kinds of alert a request raised."""

    def __init__(self, config: Detection) -> None:
        self.config = config
        self._blacklight: dict[str, Blacklight] = {}
        self._prada: dict[str, Prada] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.config.blacklight.enabled or self.config.prada.enabled

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def inspect(self, key: str, x: np.ndarray, labels: np.ndarray) -> dict[str, list[int]]:
        """Feed a batch of queries ``x`` (N, ...) with their predicted ``labels`` (N,).

        Returns detector kind -> indices of the flagged inputs (kinds with none left out).
        """
        found: dict[str, list[int]] = {}
        bl_cfg, pr_cfg = self.config.blacklight, self.config.prada
        with self._lock(key):
            if bl_cfg.enabled:
                bl = self._blacklight.setdefault(key, Blacklight(bl_cfg))
                hits = [i for i, xi in enumerate(x) if bl.flags(xi)]
                if hits:
                    found["blacklight"] = hits
            if pr_cfg.enabled:
                pr = self._prada.setdefault(key, Prada(pr_cfg))
                hits = [
                    i
                    for i, (xi, li) in enumerate(zip(x, labels, strict=True))
                    if pr.flags(xi, int(li))
                ]
                if hits:
                    found["prada"] = hits
        return found
