"""serve/spread.py: a key working on one input spreads its queries too little."""

from __future__ import annotations

import numpy as np

from mlwarden.core.data import load_dataset
from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor
from mlwarden.serve.spread import Spread


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


def _kinds(det: Detection, xs: np.ndarray) -> list[set[str]]:
    mon = Monitor(det, shape=[1, 8, 8])
    mon.crosskey = None
    labels = np.zeros(len(xs), dtype=np.int64)
    return [set(mon.inspect("k", xs[i : i + 1], labels[i : i + 1])) for i in range(len(xs))]


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
