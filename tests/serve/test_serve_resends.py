"""Benign clients built unlike our streams (issue 19, held-out benchmark): noisy resends
of a few inputs, and a calibration sample that is quiet by the luck of its order.

``benchmarks/gateway_detection_heldout.py`` found both: a client sending 58 wine rows
again and again with fresh 3% noise raised 345 dilution alarms per 1,000, and settings
that were quiet on 1,000 MNIST calibration digits raised 28 per 1,000 on 1,500 others
(dense digits "1" whose neighbours came after them in the calibration replay).
"""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.serve.calibrate import _Runner, _try_similarity, search_stream, window_count
from mlwarden.serve.config import Detection
from mlwarden.serve.dilution import moved
from mlwarden.serve.monitor import Monitor


def test_moved_tells_one_input_resent_from_a_ball_that_drifts() -> None:
    """Permutation test: iid noise balls (any shape of noise) are still; a drift of three
    noise widths over the ball is seen from 40 rows on."""
    rng = np.random.default_rng(0)
    still = drift = 0
    for d, n in ((4, 30), (13, 40), (64, 20), (64, 100)):
        for _ in range(150):
            scale = rng.uniform(0.1, 1.0, d)  # anisotropic noise
            still += moved(rng.normal(0, 1, (n, d)) * scale)
            path = np.linspace(0, 3, max(n, 40))[:, None] * rng.normal(0, 1, d) * scale
            drift += moved(rng.normal(0, 1, (max(n, 40), d)) * scale + path)
    assert still == 0
    assert drift >= 0.9 * 600
    assert moved(np.ones((5, 3)))  # too few rows to tell: fails closed
    assert not moved(np.ones((30, 3)))  # one exact input: nothing moved


def _det(still: int) -> Detection:
    # the dilution test alone decides: the window count is out of reach of 40 copies
    return Detection.model_validate(
        {
            "blacklight": {"enabled": False},
            "prada": {"enabled": False},
            "similarity": {"radius": 0.1, "min_neighbours": 200, "window": 1000},
            "dilution": {"enabled": True, "still": still},
        }
    )


@pytest.fixture(scope="module")
def resends(digits) -> np.ndarray:
    """30 digits, each sent 40 times with fresh N(0, 0.02) noise, in random order."""
    xtr = digits[0]
    rng = np.random.default_rng(1)
    base = xtr[rng.permutation(len(xtr))[:30]]
    xs = base[rng.integers(0, 30, 1200)]
    return np.clip(xs + rng.normal(0, 0.02, xs.shape), 0, 1).astype(np.float32)


def _dilution_flags(det: Detection, xs: np.ndarray) -> list[int]:
    mon = Monitor(det, shape=[1, 8, 8])
    zero = np.zeros(1, dtype=np.int64)
    return [i for i, x in enumerate(xs) if "dilution" in mon.inspect("k", x[None], zero)]


def test_noisy_resends_of_a_few_inputs_are_left_alone_with_still(resends) -> None:
    assert len(_dilution_flags(_det(0), resends)) > 300  # every tight ball: a search
    assert _dilution_flags(_det(100), resends) == []


def test_a_diluted_search_is_still_flagged_with_still(digits) -> None:
    """The sigma-0.05 search, 1 query in 11 among distinct digits: it moves, so it is
    flagged (later than without the rule, which flags it at its first tight ball)."""
    xtr, _, xte, _ = digits
    benign = np.concatenate([xtr, xte, np.roll(xtr, 1, axis=3)])
    benign = benign[np.random.default_rng(2).permutation(len(benign))]
    search = search_stream(xte[0], (0.0, 1.0), 0.05, 300, seed=3).astype(np.float32)
    firsts = {}
    for still in (0, 100):
        mon = Monitor(_det(still), shape=[1, 8, 8])
        zero = np.zeros(1, dtype=np.int64)
        for i, q in enumerate(search):
            for b in benign[i * 10 : (i + 1) * 10]:
                mon.inspect("k", b[None].astype(np.float32), zero)
            if mon.inspect("k", q[None], zero).get("dilution"):
                firsts[still] = i + 1
                break
    assert firsts[0] <= 25
    assert firsts[100] <= 120


def _hubs(n_hubs: int = 6, spokes: int = 24, dims: int = 16) -> np.ndarray:
    """Calibration inputs with hubs: each hub has ``spokes`` neighbours at the radius
    that are not each other's neighbours; the hubs come first, so a replay in this
    order never sees a hub with its spokes before it (quiet), a stream in another
    order does."""
    rng = np.random.default_rng(0)
    hubs = rng.uniform(0.2, 0.8, (n_hubs, dims))
    spoke = []
    for h in hubs:
        u = np.linalg.qr(rng.normal(size=(dims, dims)))[0][:, : spokes // 2].T
        ring = np.concatenate([u, -u])  # 24 unit directions, pairwise sqrt(2) or 2 apart
        spoke.append(h + 0.8 * 0.1 * np.sqrt(dims) * ring)  # at 0.8 r (RMS per value)
    far = rng.uniform(0, 1, (1000 - n_hubs * (spokes + 1), dims))
    return np.concatenate([hubs, *spoke, far]).astype(np.float32)


def test_calibration_wants_headroom_beyond_its_own_replay() -> None:
    xs = _hubs()
    labels = np.zeros(len(xs), dtype=np.int64)
    run = _Runner([16], 1.0, {"distinct": (xs, labels)}, [], 1.0, "tensor", 300)
    base = Detection.model_validate({"blacklight": {"enabled": False},
                                     "prada": {"enabled": False}})  # fmt: skip
    setting = {"radius": 0.1, "min_neighbours": 20}
    det = base.model_copy(deep=True)
    det.similarity.radius, det.similarity.min_neighbours = 0.1, 20
    assert run.false_alarms(det) == {"distinct": 0.0}  # this replay is quiet
    assert window_count(det, run) >= 20  # but a hub has 24 neighbours
    tried: dict = {}
    assert _try_similarity(base, run, tried, "radius 0.1", **setting) is None
    # a stream of the same inputs in another order: the hubs after their spokes
    mon = Monitor(det, shape=[16])
    flags = [bool(mon.inspect("k", x[None], labels[:1])) for x in xs[::-1]]
    assert sum(flags) >= 6
