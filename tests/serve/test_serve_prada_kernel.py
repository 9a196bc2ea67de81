"""PRADA's compiled nearest-reference search (``serve/kernels.py:prada_candidates``)
against the numpy code it replaces: every recorded distance, threshold, W and flag must
be identical (issue 19: PRADA against every earlier query cost ~36 us a query at a full
history, a third of the detectors' served cost)."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.serve import monitor
from mlwarden.serve.config import Prada as PradaConfig
from mlwarden.serve.monitor import Prada, _prada_bounds


def _streams(dims: int, seed: int) -> np.ndarray:
    """Distinct rows, near copies, exact distance ties, rows far from 0 packed close
    (float32 rounding larger than the gaps between distances), and tiny values whose
    squares underflow float32."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0, 1, (2400, dims)).astype(np.float32)
    xs[1::4] = xs[::4] + rng.normal(0, 1e-3, (600, dims)).astype(np.float32)
    xs[3::8] = np.round(rng.uniform(0, 3, (300, dims)), 0)
    xs[:300] = 50 + rng.normal(0, 0.01, (300, dims))
    xs[2::8] = 50 + rng.normal(0, 0.01, (300, dims))
    xs[5::16] = rng.normal(0, 1e-22, (150, dims))
    for i in range(1000, 1200):  # a search: one value stepped, query after query
        xs[i] = xs[i - 1]
        xs[i, rng.integers(0, dims)] += 0.1
    return xs


@pytest.mark.parametrize(
    ("dims", "classes", "history"), [(3, 2, 5000), (13, 3, 700), (64, 10, 5000), (64, 2, 900)]
)
def test_compiled_nearest_gives_the_numpy_distances_bit_for_bit(
    dims, classes, history, monkeypatch
):
    if monitor._kernels(wait=True) is None:
        pytest.skip("numba is not installed: only the numpy path exists here")
    xs = _streams(dims, dims + classes)
    labels = np.random.default_rng(dims).integers(0, classes, len(xs))
    cfg = PradaConfig(history=history, min_queries=5, test_every=7)
    fast, plain = Prada(cfg, resend=0.002), Prada(cfg, resend=0.002)
    kernels = monitor._kernels
    for x, y in zip(xs, labels, strict=True):
        got = fast.flags(x, int(y)), fast.last_w
        monkeypatch.setattr(monitor, "_kernels", lambda: None)
        want = plain.flags(x, int(y)), plain.last_w
        monkeypatch.setattr(monitor, "_kernels", kernels)
        assert got == want
    assert np.array_equal(fast._dists, plain._dists)
    assert fast._n_dists == plain._n_dists > len(xs) // 2  # resends dropped alike, not all
    assert fast._thresholds == plain._thresholds
    for label, ref in fast._sets.items():
        assert np.array_equal(ref[: fast._sizes[label]], plain._sets[label][: plain._sizes[label]])


def test_candidates_hold_every_row_that_can_be_the_float32_minimum() -> None:
    """Rows whose distances differ by less than float32's rounding all come back, and
    the nearest of them by numpy's own arithmetic is among them."""
    kernels = monitor._kernels(wait=True)
    if kernels is None:
        pytest.skip("numba is not installed: only the numpy path exists here")
    rng = np.random.default_rng(0)
    for dims in (1, 7, 64, 300):
        v = rng.uniform(40, 60, dims).astype(np.float32)
        ref = (v + rng.normal(0, 1e-4, (500, dims))).astype(np.float32)
        ref[::50] = v + np.float32(1e-3)  # exact ties
        close = kernels.prada_candidates(ref, len(ref), v, *_prada_bounds(dims))
        diff = ref - v
        exact = np.einsum("ij,ij->i", diff, diff)
        assert np.flatnonzero(exact == exact.min())[0] in close
        assert exact[close].min() == exact.min()
    # rows at one exact distance (permutations of one difference vector of mixed
    # magnitudes): the two sums round differently, order by order; the bound keeps them
    for dims in (13, 64, 256):
        d = (rng.uniform(0.5, 1, dims) * 2.0 ** rng.integers(-12, 4, dims)).astype(np.float32)
        ref = np.stack([rng.permutation(d) for _ in range(400)]).astype(np.float32)
        v = np.zeros(dims, np.float32)
        close = kernels.prada_candidates(ref, len(ref), v, *_prada_bounds(dims))
        exact = np.einsum("ij,ij->i", ref, ref)
        assert exact[close].min() == exact.min(), dims
    nan = np.zeros((9, 4), np.float32)
    nan[3, 1] = np.nan
    assert len(kernels.prada_candidates(nan, 9, np.zeros(4, np.float32), 1.0, 0.0)) == 0
