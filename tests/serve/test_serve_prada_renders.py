"""PRADA and an image's renderings (serve/renders.py): thumbnail sizes of one upload are
one input; a search on one input runs out of renderings after ``EACH`` queries."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mlwarden.serve import monitor
from mlwarden.serve.config import Detection
from mlwarden.serve.config import Prada as PradaConfig
from mlwarden.serve.monitor import Monitor, Prada
from mlwarden.serve.renders import EACH


def _thumbsizes(photos: int, seed: int = 0) -> np.ndarray:
    """Each photo (3x16x16, smooth noise) at five thumbnail sizes, 1/4 to 1 of the side,
    bilinear, back to 16x16 and 8-bit (the red team's ``thumbsizes`` client, smaller)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(photos):
        im = ndimage.gaussian_filter(rng.normal(0, 1, (3, 16, 16)), (0, 0.8, 0.8))
        im = (im - im.min()) / (im.max() - im.min())
        for f in (0.25, 0.375, 0.5, 0.75, 1.0):
            h = max(2, round(16 * f))
            small = ndimage.zoom(im, (1, h / 16, h / 16), order=1, mode="nearest", grid_mode=True)
            back = ndimage.zoom(small, (1, 16 / h, 16 / h), order=1, mode="nearest", grid_mode=True)
            out.append(np.round(np.clip(back, 0, 1) * 255) / 255)
    return np.stack(out).astype(np.float32)


def _prada_only() -> Detection:
    return Detection.model_validate({"blacklight": {"enabled": False},
                                     "similarity": {"enabled": False, "radius": 0.015}})  # fmt: skip


def _flags(mon: Monitor, xs: np.ndarray, labels: np.ndarray) -> list[int]:
    return [
        i for i in range(len(xs)) if mon.inspect("k", xs[i : i + 1], labels[i : i + 1]).get("prada")
    ]


def test_thumbnail_sizes_of_each_upload_are_one_input() -> None:
    """An image key classifying five sizes of each upload: quiet; the same stream with the
    renderings rule off fails PRADA's normality test (the mixture it makes)."""
    xs = _thumbsizes(120)
    labels = xs.reshape(len(xs), 3, -1).mean(axis=2).argmax(axis=1)  # three "classes"
    on = Monitor(_prada_only(), [3, 16, 16])
    assert on.pictures and _flags(on, xs, labels) == []
    off = Monitor(_prada_only(), [3, 16, 16])
    off.pictures = False
    assert len(_flags(off, xs, labels)) > 20
    # rows, and frames under 16 x 16 (8 x 8 digits: PRADA flags query blinding there)
    assert not Monitor(_prada_only(), [768]).pictures
    assert not Monitor(_prada_only(), [1, 8, 8]).pictures


def _prada(resend: float = 0.01) -> Prada:
    p = Prada(PradaConfig(min_queries=5, test_every=1), resend=resend)
    p.renders = True
    return p


def test_a_rendering_is_measured_past_its_input_and_not_kept() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, (2, 64)).astype(np.float32)
    p = _prada()
    p.observe(b, 0)
    p.observe(a, 0)
    copy = a + np.float32(0.03)  # RMS 0.03: past the resend bar, within the link (0.04)
    p.observe(copy, 0)
    assert p._n_dists == 2 and p._sizes[0] == 2  # measured, not kept
    assert p._dists[1] == pytest.approx(np.sqrt(((copy - b) ** 2).sum()), rel=1e-5)
    plain = Prada(PradaConfig(min_queries=5, test_every=1), resend=0.01)  # renders off
    for v in (b, a, copy):
        plain.observe(v, 0)
    assert plain._dists[1] == pytest.approx(np.sqrt(((copy - a) ** 2).sum()), rel=1e-5)
    far = a + np.float32(0.2)  # beyond the link: an input of its own, kept
    p.observe(far, 0)
    assert p._sizes[0] == 3


def test_a_search_on_one_input_runs_out_of_renderings() -> None:
    """A walk from one input: the first ``EACH - 1`` steps are renderings, every later
    one is measured against its nearest query and kept, as without the rule."""
    rng = np.random.default_rng(2)
    x0 = rng.uniform(0, 1, 64).astype(np.float32)
    others = rng.uniform(0, 1, (20, 64)).astype(np.float32)
    p = _prada()
    for v in others:
        p.observe(v, 0)
    # a walk straight on: each query a step from the one before (within the link, and
    # nearer to it than to anything kept; a walk that doubles back starts an input anew)
    u = rng.normal(0, 1, 64).astype(np.float32)
    u *= 0.012 / np.sqrt((u**2).mean())
    steps = x0 + np.arange(1, 41, dtype=np.float32)[:, None] * u
    steps += rng.normal(0, 0.001, steps.shape).astype(np.float32)
    p.observe(x0, 0)
    kept = p._sizes[0]
    for v in steps:
        p.observe(v, 0)
    assert p._sizes[0] - kept == len(steps) - (EACH - 1)
    near = p._dists[p._n_dists - 20 : p._n_dists] / np.sqrt(64)
    assert near.max() < 0.03  # measured against the search's own queries


def test_a_batch_gives_one_query_at_a_times_renderings(monkeypatch: pytest.MonkeyPatch) -> None:
    """``flags_many`` with renderings (linked, resends of a rendered input, runs out,
    several classes) against ``flags`` query by query: every distance, W and row equal."""
    if monitor._kernels(wait=True) is None:
        pytest.skip("numba is not installed: only the numpy path exists here")
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(300):
        x = rng.uniform(0, 1, 64).astype(np.float32)
        rows += [x] + [x + rng.normal(0, s, 64).astype(np.float32) for s in (0.03, 0.005, 0.02)]
    chain = rows[5] + rng.normal(0, 0.02, (60, 64)).astype(np.float32)  # one input, searched
    xs = np.concatenate([np.stack(rows[:600]), chain, np.stack(rows[600:])])
    labels = [int(y) for y in rng.integers(0, 4, len(xs))]
    fast, plain = _prada(), _prada()
    got, want = [], []
    for i in range(0, len(xs), 8):
        got += fast.flags_many(xs[i : i + 8], labels[i : i + 8])
        want += [plain.flags(x, y) for x, y in zip(xs[i : i + 8], labels[i : i + 8], strict=True)]
    assert got == want
    assert np.array_equal(fast._dists, plain._dists) and fast._n_dists == plain._n_dists
    for label, ref in fast._sets.items():
        assert np.array_equal(ref[: fast._sizes[label]], plain._sets[label][: plain._sizes[label]])
    assert repr(fast.lowest_w) == repr(plain.lowest_w)
    assert sum(fast._sizes.values()) < len(xs) * 0.6  # renderings and resends not kept
