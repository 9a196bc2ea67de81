"""Mitigation: BackdoorBench's DER, retraining without flagged samples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from mlwarden.core.errors import UserError
from mlwarden.poisoning.detect_data import label_issues
from mlwarden.poisoning.mitigate import defence_effectiveness_rate, resolve_trainer, retrain_without
from mlwarden.poisoning.simulate import evaluate, flip_labels


def test_der_reference_values():
    assert defence_effectiveness_rate(0.9, 0.9, 1.0, 0.0) == 1.0  # attack removed for free
    assert defence_effectiveness_rate(0.9, 0.9, 1.0, 1.0) == 0.5  # nothing changed
    assert defence_effectiveness_rate(0.9, 0.8, 1.0, 0.0) == pytest.approx(0.95)
    assert defence_effectiveness_rate(0.9, 0.95, 0.5, 0.7) == 0.5  # gains are not rewarded


@given(*(st.floats(0, 1) for _ in range(4)))
def test_der_stays_in_unit_interval(a, b, c, d):
    assert 0.0 <= defence_effectiveness_rate(a, b, c, d) <= 1.0


def test_dropping_confident_learning_flags_undoes_targeted_label_flips(digits_split):
    train, test = digits_split
    p = flip_labels(train, 0.03, mode="targeted", source=1, target=7, seed=0)
    flagged = label_issues(p.dataset.x, p.dataset.y, seed=0).flagged
    est = LogisticRegression(max_iter=300)

    def asr(model):
        return evaluate(model, p, test)["asr"]

    result = retrain_without(est, p.dataset, flagged, test, asr=asr)
    assert result.asr_before > 0.05  # some 1s are read as 7s after the flips
    assert result.asr_after <= result.asr_before / 2
    assert result.acc_after >= result.acc_before - 0.01
    assert result.der is not None and result.der > 0.5
    assert result.removed == int(flagged.sum())


def test_trainer_spec_must_name_module_and_function():
    with pytest.raises(UserError, match="module:function"):
        resolve_trainer("no_colon_here")
    with pytest.raises(UserError, match="cannot import"):
        resolve_trainer("surely_not_a_module_xyz:train")
    with pytest.raises(UserError, match="has no function"):
        resolve_trainer("numpy:not_a_function_xyz")


def test_resolved_estimator_is_cloned_not_refit_in_place():
    est = LogisticRegression(max_iter=200)
    fit = resolve_trainer(est)
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    model = fit(x, (x[:, 0] > 0).astype(int))
    assert model is not est and not hasattr(est, "coef_")
