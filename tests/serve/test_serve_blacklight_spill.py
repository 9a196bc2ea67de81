"""Blacklight with full buckets: the spill dict, and the compiled kernel's return after it.

A hash whose bucket has no free slot goes to the spill dict, and numpy runs while the
dict holds anything (the kernel does not read it). Spilled hashes move back into their
buckets once a slot frees (:meth:`Blacklight._rehome`); the counts and chain depths must
stay those of the obvious reference (a dict of each hash's newest query).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mlwarden.serve import monitor
from mlwarden.serve.config import Blacklight as BlacklightConfig
from mlwarden.serve.monitor import Blacklight, fingerprint


def _reference(cfg: BlacklightConfig, xs: np.ndarray) -> tuple[list[int], list[int]]:
    """Each query's shared hashes and chain depth, from a dict of every hash's newest query."""
    last: dict[int, int] = {}
    depths: dict[int, int] = {}
    counts, out = [], []
    for q, x in enumerate(xs):
        fp = fingerprint(x, cfg.quantization, cfg.window, cfg.top)
        oldest = max(q - cfg.history, 0)
        owners = Counter(o for o in (last.get(h, -1) for h in fp) if o >= oldest)
        shared, depth = sum(owners.values()), 0
        if 2 * shared >= cfg.threshold:
            owner = max(owners, key=lambda o: (owners[o], o))
            depth = depths.get(owner, 0) if q - owner <= 64 else 0
            if shared >= cfg.threshold:
                depth = min(depth + 1, 64)
        depths[q] = depth
        for h in fp:
            last[h] = q
        counts.append(shared)
        out.append(depth if shared >= cfg.threshold else 0)
    return counts, out


def _stream(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct random queries, half of them one of the last 30 resent with two values
    moved (its spilled hashes come back and must be found with their newest query)."""
    xs = rng.uniform(0, 1, (n, 64)).astype(np.float32)
    for i in range(1, n):
        if rng.random() < 0.5:
            xs[i] = xs[max(i - int(rng.integers(1, 30)), 0)]
            xs[i, rng.integers(0, 64, 2)] = rng.uniform(0, 1, 2)
    return xs


@pytest.mark.parametrize("kernels", [True, False])
def test_full_buckets_keep_the_reference_counts_and_spill_briefly(kernels, monkeypatch):
    """12-slot buckets at a history of 100 fill now and then (15 spills in 4,000
    queries). Every count and depth equals the reference's, through the compiled kernel
    at batch 8 and through numpy; and no run of queries with a non-empty dict lasts
    ``history`` queries: a spilled hash used to stay until its query left the history
    (at least 100 queries of numpy each time), it now returns to its bucket when a slot
    frees (at most 40 queries here; 320 before). A slot refilled with the spilled hash
    but not its query id fails the counts."""
    if kernels and monitor._kernels(wait=True) is None:
        pytest.skip("numba is not installed: only the numpy path exists here")
    if not kernels:
        monkeypatch.setattr(monitor, "_kernels", lambda wait=False: None)
    monkeypatch.setattr(Blacklight, "_WAYS", 12)
    cfg = BlacklightConfig(history=100, quantization=0.1, threshold=20, chain=2)
    xs = _stream(4000, np.random.default_rng(3))
    bl = Blacklight(cfg)
    bl._salt = np.uint64(0x2545F4914F6CDD1D)
    counts: list[int] = []
    depths: list[int] = []
    spilled = run = longest = 0
    for i in range(0, len(xs), 8):
        run = run + 8 if bl._spill else 0
        longest = max(longest, run)
        before = len(bl._spill)
        got = bl.observe_many(xs[i : i + 8])
        spilled += len(bl._spill) > before
        counts += got[0]
        depths += got[1]
    want = _reference(cfg, xs)
    assert counts == want[0]
    assert depths == want[1]
    assert spilled >= 10 and max(want[1]) >= 2  # buckets filled; chains formed
    assert longest < cfg.history
