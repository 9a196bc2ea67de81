"""A search stuck at one point is no resend (issue 19, the issue's own benchmark).

``benchmarks/gateway_load.py``'s detection part (session 10, main 91314ac): the noisy
random search (sigma 0.05) on held-out digit 3 kept no step in 300 queries (the rounded
score of its class stayed 1.00), so its queries were the digit plus one 2x2 window of
+-0.1 plus fresh noise: a cloud around a fixed point, which the still-ball rule excused
(unflagged); Square (Linf 0.1) runs 2 and 3, stuck the same way, flipping one pixel a
query, too. :func:`mlwarden.serve.stationary.sliced` (the own cloud a slice of a wider
ball) and :func:`mlwarden.serve.stationary.coordinate` (copies that differ in a few
values: a coordinate search) veto the excuse; re-encoded copies keep it.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.core.data import load_dataset
from mlwarden.core.target import CallableTarget
from mlwarden.evasion.attacks import Square
from mlwarden.serve import stationary
from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor

_DIGITS = load_dataset("digits").x.astype(np.float32)  # (1797, 1, 8, 8) in [0, 1]
# gateway_load.py's held-out split (SEED 0): its attacks' inputs x[0], x[1], ...
_HELD_OUT = _DIGITS[np.random.default_rng(0).permutation(len(_DIGITS))[int(0.75 * 1797) :]]
# the controls ("the rule before") without the blinding rule (serve/blinding.py), which
# also flags these searches (each query a new input, all near in its view)
_NO_BLIND = Detection.model_validate({"prada": {"blinding": False}})


def _first(mon: Monitor, qs: np.ndarray) -> int | None:
    for i, q in enumerate(qs):
        if mon.inspect("k", q[None], np.zeros(1, np.int64)):
            return i + 1
    return None


def _stuck_noisy_search(x0: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """gateway_load.noisy_random_search's queries when it keeps no step after its first
    (the score never drops below the first query's): the draws of its run ``seed`` (a
    2x2 window of +-0.1 on the first window, fresh N(0, sigma)) around ``x0``."""
    rng = np.random.default_rng(seed)
    delta, out = np.zeros_like(x0), []
    for i in range(300):
        cand = delta.copy()
        r, c = rng.integers(0, 7, 2)
        cand[..., r : r + 2, c : c + 2] = rng.choice([-0.1, 0.1])
        out.append(np.clip(x0 + cand + rng.normal(0, sigma, x0.shape), 0, 1))
        delta = cand if i == 0 else delta
    return np.asarray(out, dtype=np.float32)


def test_the_issue_stuck_noisy_search_is_flagged_within_300(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    qs = _stuck_noisy_search(_HELD_OUT[3], 0.05, seed=3)
    first = _first(Monitor(Detection(), shape=[1, 8, 8]), qs)
    assert first is not None and first <= 60  # 35 measured
    monkeypatch.setattr(stationary, "sliced", lambda *a: False)  # the rule before
    assert _first(Monitor(_NO_BLIND, shape=[1, 8, 8]), qs) is None


@pytest.mark.parametrize("seed", [2, 3])
def test_a_stuck_square_search_is_flagged_within_300(seed: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def run(det: Detection) -> int | None:
        mon = Monitor(det, shape=[1, 8, 8])
        found: list[int] = []

        def scores(x: np.ndarray) -> np.ndarray:  # a score that never moves: rounded 1.00
            if mon.inspect("k", x.astype(np.float32), np.zeros(len(x), np.int64)) and not found:
                found.append(target.queries)
            return np.tile(np.eye(10, dtype=np.float32)[0], (len(x), 1))

        target = CallableTarget(scores, access="score", max_queries=300)
        x0 = _HELD_OUT[seed : seed + 1]
        Square(norm="linf", eps=0.1, n_queries=300, seed=seed).generate(
            target, x0, np.zeros(1, np.int64)
        )
        return found[0] if found else None

    first = run(Detection())
    assert first is not None and first <= 100
    monkeypatch.setattr(stationary, "coordinate", lambda rows: False)  # the rule before
    assert run(_NO_BLIND) is None


def test_re_encodings_are_no_coordinate_search_and_pixel_flips_are() -> None:
    rng = np.random.default_rng(0)
    x0 = _DIGITS[7, 0].astype(np.float64)
    recoded, noisy, flips = [], [], []
    for _ in range(20):  # a gain, a one-pixel shift half the time, 8 bits (benign clients)
        v = x0 * rng.uniform(0.95, 1.05)
        v = (
            np.roll(v, int(rng.choice([-1, 1])), axis=int(rng.integers(0, 2)))
            if rng.random() < 0.5
            else v
        )
        recoded.append(np.round(np.clip(v, 0, 1) * 255) / 255)
        noisy.append(np.clip(x0 + rng.normal(0, 0.01, x0.shape), 0, 1))
        f = x0.copy()
        f[tuple(rng.integers(0, 8, 2))] += rng.choice([-0.2, 0.2])
        flips.append(f)
    assert not stationary.coordinate(np.reshape(recoded, (20, 64)))
    assert not stationary.coordinate(np.reshape(noisy, (20, 64)))
    assert stationary.coordinate(np.reshape(flips, (20, 64)))
    thin = np.zeros(64)
    thin[[10, 18, 26]] = 1.0  # a stroke of three values under a gain: changes along itself
    assert not stationary.coordinate(np.outer(rng.uniform(0.9, 1.1, 20), thin))
    assert not stationary.coordinate(np.reshape(flips, (20, 64))[:, :32])  # a table: never


def test_a_slice_of_a_noise_cloud_is_vetoed_and_of_a_re_encoding_is_not() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.05, (30, 64))  # white noise: ~60 effective dimensions
    gain = np.outer(rng.uniform(0.95, 1.05, 30), _DIGITS[7].ravel())  # one direction
    tight = stationary.TIGHT
    assert stationary.sliced(10, 29, noise, tight)
    assert not stationary.sliced(15, 29, noise, tight)  # most of the ball: a resend's
    assert not stationary.sliced(10, 29, gain, tight)  # a re-encoding's few directions
    assert not stationary.sliced(1, 29, noise, None)  # the own cloud is the ball
