"""A ball of distinct natural inputs near each other, none a copy of the query, is not a
search (issue 19, session 12: :func:`mlwarden.serve.stationary.natural`).

An image service classifying each photo at several thumbnail sizes brought back to the
model's input (redteam11's ``thumbsizes``) puts, on 8 x 8 digits, many photos' 3 x 3 and
4 x 4 renderings within the similarity radius of each other: 22-72 neighbours, no copy
of the query within ``TIGHT`` of the radius, so the still-ball rule had nothing to judge
and the alert stood (42.5 per 1,000). Such a ball is still and spans few directions
(the low-resolution renderings: 5-15 effective dimensions); a noisy search's white
noise spans ~40, a moving search drifts, and a coordinate search changes a few values.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mlwarden.serve.stationary import FULL, natural


def _thumbs(n: int, rng: np.random.Generator, k: int = 3) -> np.ndarray:
    """``n`` distinct k x k renderings brought back to 8 x 8 (64 values), 8-bit."""
    out = [ndimage.zoom(rng.uniform(0.3, 0.5, (k, k)), 8 / k, order=1, grid_mode=True,
                        mode="nearest") for _ in range(n)]  # fmt: skip
    return np.round(np.stack(out).reshape(n, 64) * 255) / 255


def test_distinct_low_resolution_renderings_are_natural() -> None:
    rng = np.random.default_rng(0)
    assert all(natural(_thumbs(n, rng, k)) for n in (FULL, 60) for k in (3, 4))


def test_a_noisy_search_stuck_at_a_point_is_not() -> None:
    rng = np.random.default_rng(1)
    x0 = rng.uniform(0, 1, 64)
    rows = np.clip(x0 + rng.normal(0, 0.05, (60, 64)), 0, 1)
    assert not natural(rows)


def test_low_resolution_rows_that_drift_are_not() -> None:
    # a search in the low-frequency subspace whose kept point moves (Guo et al. 2019)
    rng = np.random.default_rng(2)
    rows = _thumbs(60, rng) + np.linspace(0, 0.12, 60)[:, None] * _thumbs(1, rng)[0]
    assert natural(_thumbs(60, rng)) and not natural(rows)


def test_a_coordinate_search_is_not() -> None:
    # SimBA-like candidates at one point: one value +-0.1 each
    rng = np.random.default_rng(3)
    x0 = rng.uniform(0.3, 0.7, 64)
    rows = np.tile(x0, (60, 1))
    rows[np.arange(60), rng.integers(0, 64, 60)] += rng.choice([-0.1, 0.1], 60)
    assert not natural(rows)


def test_too_few_rows_or_values_are_not() -> None:
    rng = np.random.default_rng(4)
    assert not natural(_thumbs(FULL - 1, rng))
    assert not natural(_thumbs(60, rng)[:, :32])
