"""A still ball whose noise level wanders is still; a search under it moves (issue 19).

A camera in low light (redteam12's ``lowlight``) sends one scene under sensor noise
whose level walks in 0.02-0.05 of the range: one level for the whole ball read a quiet
stretch next to a loud one as drift. :func:`mlwarden.serve.stationary.drift_p` reads
each row's noise from the successive differences around it.
"""

from __future__ import annotations

import numpy as np

from mlwarden.serve.stationary import ALPHA, drift_p


def _levels(n: int) -> np.ndarray:
    """A noise level a row: quiet (0.02) for the older rows, loud (0.05) for the newest 40."""
    return np.r_[np.full(n - 40, 0.02), np.full(40, 0.05)]


def test_a_still_ball_whose_noise_grows_is_still() -> None:
    # one level for the ball: the newest rows' contrast reads the loud stretch as drift
    # (p ~ 1e-12 here); with each row's own level it is a still ball
    for seed in range(5):
        rng = np.random.default_rng(seed)
        centre = rng.uniform(0, 1, 64)
        s = _levels(200)
        rows = centre + rng.normal(0, 1, (200, 64)) * s[:, None]
        assert drift_p(rows) >= ALPHA, seed


def test_a_walk_under_wandering_noise_moves() -> None:
    # a search's kept steps (a 2 x 2 block of +-0.1, one in 10 queries) under the same
    # noise: its centre moves, quiet stretch or loud
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x, rows = rng.uniform(0, 1, 64), []
        s = _levels(200)
        for i in range(200):
            if rng.random() < 0.1:
                k = int(rng.integers(0, 60))
                x = x.copy()
                x[k : k + 4] += rng.choice([-0.1, 0.1])
            rows.append(x + rng.normal(0, s[i], 64))
        assert drift_p(np.array(rows)) < ALPHA, seed
