"""Attack simulation: poison counts, labels, triggers, bounds, ASR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlwarden.core.errors import UserError
from mlwarden.poisoning.simulate import (
    attack_success_rate,
    badnets,
    blended,
    clean_label,
    evaluate,
    flip_labels,
)


def test_badnets_all_to_one_poisons_rate_of_samples_and_relabels(digits_split):
    train, _ = digits_split
    p = badnets(train, 0.05, target=2, seed=0)
    assert len(p.poison_index) == round(0.05 * len(train))
    assert np.all(p.dataset.y[p.poison_index] == 2)
    assert np.all(train.y[p.poison_index] != 2)  # drawn from other classes
    untouched = ~p.is_poison
    assert np.array_equal(p.dataset.x[untouched], train.x[untouched])
    assert np.array_equal(p.dataset.y[untouched], train.y[untouched])
    # the checkerboard patch sits in the bottom-right 3x3 corner
    corner = p.dataset.x[p.poison_index][:, 0, 5:, 5:]
    assert np.all(corner[:, 0, 0] == 1.0) and np.all(corner[:, 0, 1] == 0.0)


def test_badnets_all_to_all_shifts_each_label_by_one(digits_split):
    train, _ = digits_split
    p = badnets(train, 0.1, mode="all-to-all", seed=0)
    i = p.poison_index
    assert np.array_equal(p.dataset.y[i], (train.y[i] + 1) % 10)
    assert p.target is None


def test_random_label_flip_changes_exactly_the_poisoned_labels(digits_split):
    train, _ = digits_split
    p = flip_labels(train, 0.1, seed=3)
    changed = np.flatnonzero(p.dataset.y != train.y)
    assert np.array_equal(changed, p.poison_index)
    assert np.array_equal(p.dataset.x, train.x)


def test_targeted_label_flip_moves_source_to_target(digits_split):
    train, _ = digits_split
    p = flip_labels(train, 0.05, mode="targeted", source=1, target=7, seed=0)
    assert np.all(train.y[p.poison_index] == 1)
    assert np.all(p.dataset.y[p.poison_index] == 7)


def test_blended_trigger_mixes_with_alpha_and_stays_in_bounds(digits_split):
    train, _ = digits_split
    p = blended(train, 0.05, target=0, alpha=0.2, seed=0)
    i = p.poison_index
    assert p.trigger is not None
    expected = 0.8 * train.x[i] + 0.2 * p.trigger.pattern
    assert np.allclose(p.dataset.x[i], expected, atol=1e-6)
    assert p.dataset.x.min() >= 0.0 and p.dataset.x.max() <= 1.0


def test_clean_label_keeps_labels_and_bounds_the_perturbation(digits_split, backdoored):
    train, _ = digits_split
    p = clean_label(train, 0.03, target=4, surrogate=backdoored.model, eps=0.1, steps=5, seed=0)
    assert np.array_equal(p.dataset.y, train.y)
    assert np.all(train.y[p.poison_index] == 4)
    i = p.poison_index
    outside = p.trigger.mask == 0  # away from the patch, only the PGD change remains
    diff = np.abs(p.dataset.x[i] - train.x[i])[:, outside]
    assert diff.max() <= 0.1 + 1e-6 and diff.max() > 0.0


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_rates_outside_zero_one_are_refused(digits_split, rate):
    train, _ = digits_split
    with pytest.raises(UserError, match="poison rate"):
        badnets(train, rate)


def test_clean_label_refuses_more_poison_than_the_target_class_holds(digits_split):
    train, _ = digits_split
    with pytest.raises(UserError, match="class 0 has"):
        clean_label(train, 0.5, target=0, surrogate=torch.nn.Identity())


def test_backdoored_model_has_high_asr_and_clean_accuracy(backdoored):
    out = evaluate(backdoored.model, backdoored.poisoned, backdoored.test)
    assert out["clean_accuracy"] > 0.9
    assert out["asr"] > 0.9


def test_asr_of_a_clean_model_is_low(digits_split, backdoored):
    from mlwarden.core.models import SmallCNN, fit

    train, test = digits_split
    clean = fit(SmallCNN(1, 10, 8), train.x, train.y, epochs=8, seed=0)
    assert attack_success_rate(clean, backdoored.poisoned, test) < 0.3
