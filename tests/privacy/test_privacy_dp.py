"""DP-SGD training through Opacus reports its privacy guarantee."""

from __future__ import annotations

import pytest

from mlwarden.core.errors import UserError
from mlwarden.core.models import MLP
from mlwarden.defenses.dp import default_delta, train_dp


def test_dp_training_reports_epsilon_at_most_the_target(digits_halves) -> None:  # type: ignore[no-untyped-def]
    train, _ = digits_halves
    x, y = train.x[:300], train.y[:300]
    result = train_dp(MLP(64, 10, hidden=(32,)), x, y, target_epsilon=4.0, epochs=2, seed=0)
    assert 0 < result.epsilon <= 4.0 + 1e-6
    assert result.delta == default_delta(300) < 1 / 300
    assert result.noise_multiplier > 0 and not result.model.training


def test_more_noise_gives_a_smaller_epsilon(digits_halves) -> None:  # type: ignore[no-untyped-def]
    train, _ = digits_halves
    x, y = train.x[:200], train.y[:200]
    low = train_dp(
        MLP(64, 10, hidden=(16,)), x, y, target_epsilon=None, noise_multiplier=0.8, epochs=1
    )
    high = train_dp(
        MLP(64, 10, hidden=(16,)), x, y, target_epsilon=None, noise_multiplier=3.0, epochs=1
    )
    assert high.epsilon < low.epsilon


def test_dp_training_needs_exactly_one_privacy_knob(digits_halves) -> None:  # type: ignore[no-untyped-def]
    train, _ = digits_halves
    with pytest.raises(UserError, match="exactly one"):
        train_dp(MLP(64, 10), train.x[:10], train.y[:10], target_epsilon=1.0, noise_multiplier=1.0)
