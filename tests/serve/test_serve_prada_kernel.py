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


@pytest.mark.parametrize(
    ("dims", "classes", "history", "resend", "batch"),
    [(3, 2, 5000, 0.002, 8), (13, 3, 700, 0.002, 5), (64, 10, 5000, 0.05, 8),
     (64, 2, 900, 0.0, 8), (64, 10, 300, 0.05, 1), (16, 40, 500, 0.01, 64)],
)  # fmt: skip
def test_a_batch_gives_the_flags_and_state_of_one_query_at_a_time(
    dims, classes, history, resend, batch, monkeypatch
):
    """``Prada.flags_many`` (the sets updated in order, the batch's candidates measured by
    one einsum afterwards) against ``flags`` query by query: every flag, W, distance,
    moment and row identical, with resends decided by the kernel's own sum, near the bar
    (measured at once), NaN rows, sets that grow and sets that are full."""
    if monitor._kernels(wait=True) is None:
        pytest.skip("numba is not installed: only the numpy path exists here")
    xs = _streams(dims, dims + classes)
    # copies at the resend bar itself: RMS per value within a hair of ``resend``
    step = np.float32(resend) * np.ones(dims, np.float32)
    xs[11::50] = xs[10::50][: len(xs[11::50])] + step
    labels = [int(y) for y in np.random.default_rng(dims).integers(0, classes, len(xs))]
    xs[7::97, 0] = np.nan  # in a class of their own: every later query of it measured at once
    labels[7::97] = [classes] * len(labels[7::97])
    cfg = PradaConfig(history=history, min_queries=5, test_every=7)
    fast, plain = Prada(cfg, resend=resend), Prada(cfg, resend=resend)
    measured = []
    nearest = fast._nearest
    monkeypatch.setattr(fast, "_nearest", lambda *a: measured.append(1) or nearest(*a))
    got, want = [], []
    for i in range(0, len(xs), batch):
        got += fast.flags_many(xs[i : i + batch], labels[i : i + batch])
        part = zip(xs[i : i + batch], labels[i : i + batch], strict=True)
        want += [plain.flags(x, y) for x, y in part]
        assert repr((fast.last_w, fast._pending)) == repr((plain.last_w, plain._pending)), i
    assert got == want and fast.last_w is not None
    assert repr(fast.lowest_w) == repr(plain.lowest_w)
    assert np.array_equal(fast._dists, plain._dists, equal_nan=True)
    assert fast._n_dists == plain._n_dists > len(xs) // 2
    assert repr((fast._thresholds, fast._moments, fast._oldest, fast._total)) == repr(
        (plain._thresholds, plain._moments, plain._oldest, plain._total))  # fmt: skip
    for label, ref in fast._sets.items():
        mine, theirs = ref[: fast._sizes[label]], plain._sets[label][: plain._sizes[label]]
        assert np.array_equal(mine, theirs, equal_nan=True)
    assert len(measured) < len(xs) // 4  # most queries measured by the batch's einsum
    assert len(measured) >= len(xs) // 97  # NaN: measured at once


def test_shapiro_coefficients_are_those_of_numpys_polyval() -> None:
    """``_horner`` is ``np.polyval`` bit for bit, so each W is unchanged."""
    for n in [*range(6, 3000), 5000, 10**5]:
        u = 1.0 / np.sqrt(n)
        for c in ((-2.706056, 4.434685, -2.07119, -0.147981, 0.221157, 0.0),
                  (-3.582633, 5.682633, -1.752461, -0.293762, 0.042981, 0.0)):  # fmt: skip
            assert monitor._horner(c, float(u)) == np.polyval(list(c), u)


def test_merged_record_is_numpys_sort_of_the_ring() -> None:
    """``kernels.merge_record`` (the distance record between two tests) against
    ``np.sort`` of the multiset: ties, values that leave and come back, empty changes;
    NaN anywhere, or a value to take out that is not there, is refused (sorted afresh)."""
    kernels = monitor._kernels(wait=True)
    if kernels is None:
        pytest.skip("numba is not installed: only the numpy path exists here")
    rng = np.random.default_rng(0)
    for trial in range(300):
        old = np.sort(np.round(rng.uniform(0, 3, int(rng.integers(3, 60))), trial % 3))
        gone = rng.choice(old, int(rng.integers(0, min(len(old), 12) + 1)), replace=False)
        new = np.round(rng.uniform(0, 3, int(rng.integers(0, 12))), trial % 3)
        if trial % 5 == 0:
            new = np.concatenate([new, gone[:2]])  # a value leaves and comes back
        keep = list(old)
        for g in gone:
            keep.remove(g)
        done, merged = kernels.merge_record(old, gone, new)
        want = np.sort(np.concatenate([keep, new]))
        assert done and merged.tobytes() == want.tobytes(), trial
    old = np.arange(5.0)
    assert not kernels.merge_record(old, np.array([np.nan]), np.zeros(0))[0]
    assert not kernels.merge_record(old, np.zeros(0), np.array([np.nan]))[0]
    assert not kernels.merge_record(np.array([0.0, np.nan]), np.zeros(0), np.ones(1))[0]
    assert not kernels.merge_record(old, np.array([2.5]), np.zeros(0))[0]
    assert not kernels.merge_record(old, np.array([9.0]), np.zeros(0))[0]
