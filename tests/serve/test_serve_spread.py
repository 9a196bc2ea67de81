"""serve/spread.py: a key working on one input spreads its queries too little."""

from __future__ import annotations

import numpy as np

from mlwarden.core.data import load_dataset
from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor
from mlwarden.serve.spread import (
    STRIDE,
    Spread,
    _dims,
    _floor,
    above_floor,
    gram_of,
    on_input,
    spread_of,
)
from mlwarden.serve.stationary import dims


def _digits() -> np.ndarray:
    return load_dataset("digits").x.astype(np.float32).reshape(-1, 1, 8, 8)


def _search(x0: np.ndarray, sigma: float, n: int, seed: int) -> np.ndarray:
    """The issue's noisy random search (2x2 blocks of +-0.1, a quarter of steps kept)."""
    rng = np.random.default_rng(seed)
    delta = np.zeros_like(x0)
    out = []
    for _ in range(n):
        cand = delta.copy()
        r, c = rng.integers(0, 7, 2)
        cand[..., r : r + 2, c : c + 2] = rng.choice([-0.1, 0.1])
        out.append(np.clip(x0 + cand + rng.normal(0, sigma, x0.shape), 0, 1))
        if rng.random() < 0.25:
            delta = cand
    return np.asarray(out, dtype=np.float32)


SECRET = b"spread tests".ljust(32, b"-")  # the neighbourhood's draws (Spread.drawn) fixed


def _kinds(det: Detection, xs: np.ndarray, batch: int = 1) -> list[set[str]]:
    mon = Monitor(det, shape=[1, 8, 8], secret=SECRET)
    mon.crosskey = None
    labels = np.zeros(len(xs), dtype=np.int64)
    out: list[set[str]] = [set() for _ in xs]
    for a in range(0, len(xs), batch):
        for kind, where in mon.inspect("k", xs[a : a + batch], labels[a : a + batch]).items():
            for j in where:
                out[a + j].add(kind)
    return out


def test_spread_in_batches_is_the_window_variance_query_by_query() -> None:
    rng = np.random.default_rng(0)
    vs = rng.normal(size=(137, 5))
    one, many = Spread(20, 5), Spread(20, 5)
    a = np.concatenate([one.observe_many(vs[i : i + 1]) for i in range(len(vs))])
    b = np.concatenate([many.observe_many(vs[i : i + s]) for i, s in
                        zip(range(0, 137, 30), [30] * 5, strict=True)])  # fmt: skip
    assert np.isnan(a[:19]).all() and np.isnan(b[:19]).all()
    want = [np.sqrt(vs[i - 19 : i + 1].var(axis=0).mean()) for i in range(19, 137)]
    np.testing.assert_allclose(a[19:], want, rtol=1e-9)
    np.testing.assert_allclose(b[19:], want, rtol=1e-9)


def test_a_search_too_noisy_for_the_radius_is_flagged_by_its_spread() -> None:
    x = _digits()
    on, off = Detection(), Detection()
    off.spread.enabled = False
    for k in range(2):
        qs = _search(x[k], 0.13, 120, seed=k)
        with_spread = [i for i, kinds in enumerate(_kinds(on, qs)) if "spread" in kinds]
        assert with_spread and with_spread[0] < 60  # its 50th query: the window is full
        assert not any("similarity" in kinds for kinds in _kinds(off, qs)[:60])


def test_distinct_digits_and_one_digit_resent_with_small_noise_are_not_narrow() -> None:
    x = _digits()
    rng = np.random.default_rng(3)
    distinct = x[rng.permutation(len(x))[:300]]
    assert not any("spread" in kinds for kinds in _kinds(Detection(), distinct))
    # one input resent with fresh noise: a still cloud of copies (the still-ball rule)
    copies = np.clip(x[5] + rng.normal(0, 0.01, (100, 1, 8, 8)), 0, 1).astype(np.float32)
    assert not any("spread" in kinds for kinds in _kinds(Detection(), copies))


def test_calibrate_puts_the_bar_under_the_narrowest_benign_window() -> None:
    from mlwarden.serve.calibrate import SPREAD_MARGIN, _Runner, _set_spread

    x = _digits()
    y = np.asarray(load_dataset("digits").y)
    rng = np.random.default_rng(1)
    distinct = x[rng.permutation(len(x))[:300]]
    run = _Runner([1, 8, 8], 1.0, {"distinct": (distinct, np.zeros(300, np.int64))}, [], 1.0,
                  "tensor", 300, sample=(x, y))  # fmt: skip
    data = Detection().model_dump()
    notes: list[str] = []
    _set_spread(data, run, notes)
    low = lambda v: np.nanmin(Spread(50, 64).observe_many(v.reshape(len(v), -1)))  # noqa: E731
    classes = [low(x[y == c]) for c in range(10)]
    assert min(classes) < low(distinct)  # one class at a time spreads less than all digits
    assert data["spread"]["bar"] == round(min(classes) / SPREAD_MARGIN, 4)
    assert notes and "spread.bar" in notes[0]


def test_calibrate_reports_the_noisier_searches_first_flags() -> None:
    from mlwarden.serve.calibrate import calibrate
    from mlwarden.serve.config import GatewayConfig

    ds = load_dataset("digits")
    cfg = GatewayConfig.model_validate({"input": {"range": [0, 1], "shape": [1, 8, 8]}})
    result = calibrate(cfg, _digits(), np.asarray(ds.y), benign=100, searches=1, seed=5)
    assert set(result.ladder) == {0.1, 0.15} and all(len(f) == 1 for f in result.ladder.values())
    assert result.summary()["ladder_first_flag"].keys() == {"0.1", "0.15"}


def test_fifty_digits_of_one_class_in_a_row_are_natural_not_noise() -> None:
    # zeros in a row spread 0.139: near the bar, but their variation spans few directions
    ds = load_dataset("digits")
    zeros = _digits()[np.asarray(ds.y) == 0][:120]
    narrow = Detection()
    narrow.spread.bar = 0.2  # every window of them is under it: the gate alone decides
    assert not any("spread" in kinds for kinds in _kinds(narrow, zeros))
    assert any("spread" in kinds for kinds in _kinds(narrow, _search(zeros[0], 0.13, 80, 0)))


def test_white_noise_of_any_sigma_holds_no_variation_above_its_floor() -> None:
    rng = np.random.default_rng(2)
    x = _digits()
    for sigma in (0.05, 0.2, 0.8):  # a noisy search's window, clipped to the range
        qs = _search(x[3], sigma, 50, seed=1).reshape(50, -1).astype(np.float64)
        assert above_floor(qs) < 0.5 * 0.6 * 0.12  # half the default bar: the steps alone
        assert np.sqrt(qs.var(axis=0).mean()) > 0.6 * 0.12 or sigma == 0.05
    # distinct digits and one class at a time keep most of their spread above it
    y = np.asarray(load_dataset("digits").y)
    for rows in (x[rng.permutation(len(x))[:50]], x[y == 0][:50], x[y == 1][50:100]):
        flat = rows.reshape(50, -1).astype(np.float64)
        assert above_floor(flat) > max(0.7 * np.sqrt(flat.var(axis=0).mean()), 0.1)


def test_a_search_at_any_noise_is_flagged_above_its_floor_in_batches_too() -> None:
    x = _digits()
    off = Detection()
    off.spread.net = None
    for k, sigma in ((0, 0.3), (1, 0.6)):  # spread 0.2-0.35: over the plain bar
        qs = _search(x[k], sigma, 70, seed=k)
        one = [i for i, kinds in enumerate(_kinds(Detection(), qs)) if "spread" in kinds]
        # each query counted a multiple of STRIDE from the first full window (the 50th) on
        assert one == list(range(-(-50 // STRIDE) * STRIDE - 1, 70, STRIDE))
        eight = [i for i, kinds in enumerate(_kinds(Detection(), qs, 8)) if "spread" in kinds]
        assert eight == one
        assert not any("spread" in kinds for kinds in _kinds(off, qs))


def test_random_tensors_are_noise_around_no_input_and_not_flagged() -> None:
    """A load test's random inputs: white, nothing above the floor, but their mean is a
    constant (plus the noise a mean keeps), not an input worked on."""
    rng = np.random.default_rng(4)
    x = _digits()
    for rows in (rng.uniform(0, 1, (50, 64)), rng.normal(0, 1, (50, 64))):
        assert above_floor(rows) < 0.01 and not on_input(rows, _floor(rows)[1])
    qs = _search(x[2], 0.8, 50, seed=2).reshape(50, -1).astype(np.float64)
    assert on_input(qs, _floor(qs)[1])  # the loudest search still centres on its digit
    noise = rng.uniform(0, 1, (120, 1, 8, 8)).astype(np.float32)
    assert not any("spread" in kinds for kinds in _kinds(Detection(), noise))


def test_similarity_nearest_is_the_k_nearest_of_the_last_recent_in_time_order() -> None:
    from mlwarden.serve.config import Similarity as SimilarityConfig
    from mlwarden.serve.monitor import Similarity

    rng = np.random.default_rng(5)
    rows = rng.normal(size=(47, 6)).astype(np.float32)
    sim = Similarity(SimilarityConfig(history=30), 6)
    for a in range(0, 47, 7):  # batches: the ring wraps around (47 rows in 30 slots)
        sim.observe_many(rows[a : a + 7])
    q = rng.normal(size=6).astype(np.float32)
    last = rows[-20:]  # the last 20 added, oldest first
    keep = np.sort(np.argsort(((last - q) ** 2).sum(axis=1))[:5])
    np.testing.assert_allclose(sim.nearest(q, 5, 20), last[keep], rtol=1e-6)
    assert sim.nearest(q, 50, 20).shape == (20, 6)  # fewer rows than k: all, in order
    np.testing.assert_allclose(sim.nearest(q, 50, 20), last, rtol=1e-6)


def _diluted(x: np.ndarray, qs: np.ndarray, mix: int, seed: int,
             late: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``mix`` distinct digits before each of ``qs`` (``late`` more before the first): the
    stream and the attack's places."""
    pool = x[np.random.default_rng(seed).permutation(len(x))]
    rows, at = list(pool[len(pool) - late :]) if late else [], []
    for i, q in enumerate(qs):
        rows.extend(pool[(i * mix + np.arange(mix)) % len(pool)])
        at.append(len(rows))
        rows.append(q)
    return np.asarray(rows, dtype=np.float32), np.asarray(at)


def test_a_search_diluted_ten_to_one_by_distinct_digits_is_flagged_by_its_neighbourhood() -> None:
    """10 distinct digits before each search query: the key's last 50 hold 5 of the
    search's, its neighbourhood (50 nearest of the last 1,000) holds the search."""
    x = _digits()
    off = Detection()
    off.spread.near = None
    rows, at = _diluted(x, _search(x[1], 0.2, 60, seed=1), 10, seed=1)
    near = [i for i, kinds in enumerate(_kinds(Detection(), rows)) if "spread" in kinds]
    # from about its 50th query (40 of the search's and the 10 digits nearest them make
    # a neighbourhood too); a digit mixed in whose neighbours are the search's is flagged
    # with it (the key is one client)
    assert near and at[35] <= near[0] <= at[59]
    assert not any("spread" in kinds for kinds in _kinds(off, rows))


def test_random_tensors_are_no_cluster_in_their_own_neighbourhood() -> None:
    """A load test's random inputs: the 50 nearest of hundreds lean towards the query (their
    mean looks like an input) but spread nearly as much as the key's window."""
    rng = np.random.default_rng(6)
    for noise in (rng.uniform(0, 1, (600, 1, 8, 8)), rng.normal(0.5, 0.3, (600, 1, 8, 8))):
        kinds = _kinds(Detection(), np.clip(noise, 0, 1).astype(np.float32))
        assert not any("spread" in k for k in kinds)


def test_a_windows_tests_read_off_its_gram_matrix_are_the_rows_own() -> None:
    """The effective dimensions of the successive differences, the spread and the noise
    floor read off one Gram matrix (the neighbourhood's fast path) are those of the rows:
    white noise, one class of digits, shaped noise, a walk."""
    rng = np.random.default_rng(7)
    x = _digits().reshape(-1, 64).astype(np.float64)
    walk = np.cumsum(rng.normal(0, 0.05, (50, 64)), axis=0)
    blocks = np.repeat(rng.normal(0, 0.2, (50, 16)), 4, axis=1)
    for rows in (rng.normal(0.5, 0.1, (50, 64)), x[:50], x[3] + blocks, x[3] + walk):
        gram = gram_of(rows)
        np.testing.assert_allclose(_dims(gram), dims(rows), rtol=1e-9)
        np.testing.assert_allclose(spread_of(gram, 64), np.sqrt(np.mean(rows.var(axis=0))))
        np.testing.assert_allclose(_floor(rows, gram), _floor(rows), rtol=1e-9, atol=1e-12)
    assert _dims(gram_of(rng.normal(size=(50, 64)))) > 40 > 20 > _dims(gram_of(blocks))


def test_the_neighbourhood_is_judged_at_drawn_queries_a_client_cannot_time() -> None:
    """One query in ``STRIDE`` on average, in batches or alone, at every count modulo
    ``STRIDE`` alike: not every ``STRIDE``-th query counted from the key's first."""
    draws = np.random.default_rng(3)
    for batch in (1, 7):
        sp, due = Spread(5, 2), []
        for a in range(0, 20_000, batch):
            sp.observe_many(np.zeros((batch, 2)))
            due += [a + j + 1 for j in sp.drawn(batch, draws)]  # counts from 1
        assert 0.09 < len(due) / 20_000 < 0.11
        assert len(set(due)) == len(due)
        per = np.bincount(np.asarray(due) % STRIDE, minlength=STRIDE) / len(due)
        assert per.min() > 0.07 and per.max() < 0.13


def test_a_search_mixed_nine_to_one_between_fixed_checks_is_flagged_by_its_neighbourhood() -> None:
    """9 distinct digits before each search query, its queries one past a multiple of ten
    (the count a fixed stride of ten never judged): its neighbourhood is drawn too."""
    x = _digits()
    rows, at = _diluted(x, _search(x[1], 0.2, 90, seed=2), 9, seed=2, late=1)
    assert set((at + 1) % STRIDE) == {1}  # each query's count (from 1): never a multiple
    near = [i for i, kinds in enumerate(_kinds(Detection(), rows)) if "spread" in kinds]
    assert near and at[35] <= near[0] <= at[89]
