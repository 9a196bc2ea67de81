"""Text's similarity counts by Hamming distance on packed MinHash bits
(``Similarity._bits_of``, ``kernels.hamming_counts``) against the float distances they
replace: every count identical (issue 19: tweets' similarity scanned 10,000 rows of 128
floats a query, ~260 us)."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.serve import monitor
from mlwarden.serve.config import Similarity as SimilarityConfig
from mlwarden.serve.monitor import Similarity, _lattice

ONE = np.float32(0.1 / np.sqrt(0.2))  # text_scale(0.1, near 0.6)


def _bits(rng: np.random.Generator, n: int, dims: int, base: np.ndarray) -> np.ndarray:
    """Rows of 0 / ONE: copies of a few texts with 5-50% of their bits flipped."""
    src = base[rng.integers(0, len(base), n)]
    flip = rng.random((n, dims)) < rng.choice([0.05, 0.15, 0.2, 0.5], n)[:, None]
    return ((src ^ flip) * ONE).astype(np.float32)


@pytest.mark.parametrize(
    ("dims", "history", "window", "batch", "whole"),
    [(128, 2000, 300, 8, True), (128, 2000, 300, 8, False), (96, 500, 100, 1, True),
     (128, 50, 20, 8, True), (128, 300, 50, 64, False), (201, 400, 400, 5, True)],
)  # fmt: skip
def test_bit_counts_are_the_distance_counts(dims, history, window, batch, whole):
    if monitor._kernels(wait=True) is None:
        pytest.skip("numba is not installed: only the numpy path exists here")
    rng = np.random.default_rng(dims + batch)
    cfg = SimilarityConfig(history=history, window=window, radius=0.1)
    fast, plain = Similarity(cfg, dims, binary=True), Similarity(cfg, dims)
    base = rng.random((150, dims)) < 0.5
    found = 0
    for i in range(0, 2500, batch):
        vs = _bits(rng, batch, dims, base)
        got, want = fast.observe_many(vs, whole), plain.observe_many(vs, whole)
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True)), i
        found += int(want[0].sum())
    assert fast._bits is not None and found > 20  # the bit path ran, with neighbours
    assert np.array_equal(fast._ring, plain._ring) and fast._next == plain._next


def test_distances_decide_where_bits_cannot(monkeypatch):
    """A radius on a lattice point (limit = 20 x one^2), a row that is not 0 / one, and a
    restored (float16) ring: the bits are dropped and the float counts run."""
    if monitor._kernels(wait=True) is None:
        pytest.skip("numba is not installed: only the numpy path exists here")
    assert _lattice(float(ONE), 0.01 * 100, 100) is None  # 100 dims: H = 20 is the limit
    assert _lattice(float(ONE), 0.01 * 128, 128) == 25
    rng = np.random.default_rng(0)
    base = rng.random((50, 128)) < 0.5
    cfg = SimilarityConfig(history=300, window=100, radius=0.1)
    sim = Similarity(cfg, 128, binary=True)
    sim.observe_many(_bits(rng, 8, 128, base))
    assert sim._bits is not None
    odd = _bits(rng, 8, 128, base)
    odd[3, 5] = 0.5 * ONE
    sim.observe_many(odd)
    assert sim._bits is None
    restored = Similarity(cfg, 128, binary=True)
    restored.load(Similarity(cfg, 128).dump())
    assert restored._bits is None
    edge = Similarity(cfg, 100, binary=True)
    edge.observe_many(_bits(rng, 8, 100, base[:, :100]))
    assert edge._bits is None
