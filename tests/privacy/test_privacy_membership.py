"""Membership attacks find an overfit model's members and do not find a non-leaking model's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mlwarden.core.errors import UserError
from mlwarden.core.findings import Severity
from mlwarden.core.target import SklearnTarget
from mlwarden.privacy import audit_membership
from mlwarden.privacy.audit import exposed_records, membership_findings, membership_severity
from mlwarden.privacy.membership import logit_confidence
from mlwarden.privacy.shadows import SklearnRecipe, TrainerRecipe, train_shadows


def overfit_model() -> RandomForestClassifier:
    """Fully grown trees: they memorise the training set, flipped labels included."""
    return RandomForestClassifier(n_estimators=30, random_state=0)


@pytest.fixture(scope="module")
def overfit_target(noisy_cancer):  # type: ignore[no-untyped-def]
    train, _, _ = noisy_cancer
    model = overfit_model().fit(train.x, train.y)
    assert model.score(train.x, train.y) > 0.95  # memorised the flipped labels
    return SklearnTarget(model)


@pytest.mark.parametrize("attack", ["loss", "lira", "rmia", "shadow"])
def test_every_score_attack_detects_an_overfit_model(noisy_cancer, overfit_target, attack) -> None:  # type: ignore[no-untyped-def]
    train, holdout, _ = noisy_cancer
    result = audit_membership(
        overfit_target,
        train,
        holdout,
        attack=attack,
        recipe=SklearnRecipe(overfit_model()),
        shadows=4,
    )
    assert result.metrics.auc > 0.65, result.metrics.as_dict()


def test_label_only_attack_separates_at_the_train_test_accuracy_gap(
    noisy_cancer, overfit_target
) -> None:  # type: ignore[no-untyped-def]
    train, holdout, _ = noisy_cancer
    labels = SklearnTarget(overfit_target.estimator, access="label")
    result = audit_membership(labels, train, holdout, attack="label-only")
    gap = overfit_target.estimator.score(train.x, train.y) - overfit_target.estimator.score(
        holdout.x, holdout.y
    )
    assert result.metrics.balanced_accuracy >= 0.5 + gap / 2 - 1e-9 > 0.6
    assert result.queries == 25 * (len(train) + len(holdout))


def test_lira_flags_the_overfit_model(noisy_cancer, overfit_target) -> None:  # type: ignore[no-untyped-def]
    train, holdout, _ = noisy_cancer
    result = audit_membership(
        overfit_target,
        train,
        holdout,
        attack="lira",
        recipe=SklearnRecipe(overfit_model()),
        shadows=4,
    )
    assert result.metrics.tpr_at_fpr[0.01] > 0.05  # 5x the 1% a guess gets
    findings = membership_findings(result)
    assert findings[0].rule == "MLW-PRV-001" and findings[0].severity >= Severity.MEDIUM
    assert findings[0].atlas == ["AML.T0024.000"]
    assert any(f.rule == "MLW-PRV-002" for f in findings)
    # pooled over the target and 4 shadows, the same 400 records are still 400 records
    pooled = result.pooled
    assert pooled is not None and pooled.nonmembers > len(train) + len(holdout)
    assert pooled.nonmember_records <= len(train) + len(holdout)
    assert not pooled.resolvable[0.001] and 0.001 in pooled.upper_bound
    lo, hi = pooled.ci["tpr@0.01"]
    assert lo <= pooled.tpr_at_fpr[0.01] <= hi
    assert set(pooled.crossfit) == {0.01, 0.001}
    assert "at most" in findings[0].title or "at most" in findings[0].description


def test_a_model_that_never_saw_either_set_is_not_flagged(noisy_cancer) -> None:  # type: ignore[no-untyped-def]
    train, holdout, unseen = noisy_cancer
    model = overfit_model().fit(unseen.x, unseen.y)  # neither "train" nor "holdout" are members
    result = audit_membership(SklearnTarget(model), train, holdout, attack="loss")
    assert abs(result.metrics.auc - 0.5) < 0.08
    assert membership_severity(result.metrics) <= Severity.LOW


def test_exposed_records_are_training_indices_ranked_by_score(noisy_cancer, overfit_target) -> None:  # type: ignore[no-untyped-def]
    train, holdout, _ = noisy_cancer
    result = audit_membership(overfit_target, train, holdout, attack="loss")
    top = exposed_records(result, top=5)
    assert [r["rank"] for r in top] == [1, 2, 3, 4, 5]
    assert all(0 <= r["train_index"] < len(train) for r in top)
    assert [r["score"] for r in top] == sorted((r["score"] for r in top), reverse=True)


def test_shadow_attacks_without_a_recipe_say_what_to_do(noisy_cancer, overfit_target) -> None:  # type: ignore[no-untyped-def]
    train, holdout, _ = noisy_cancer
    with pytest.raises(UserError, match="--trainer"):
        audit_membership(overfit_target, train, holdout, attack="lira", recipe=None)


def test_label_only_target_refuses_score_attacks(noisy_cancer, overfit_target) -> None:  # type: ignore[no-untyped-def]
    train, holdout, _ = noisy_cancer
    labels = SklearnTarget(overfit_target.estimator, access="label")
    with pytest.raises(UserError, match="label-only"):
        audit_membership(labels, train, holdout, attack="loss")


def test_each_record_is_in_about_half_of_the_shadows(noisy_cancer) -> None:  # type: ignore[no-untyped-def]
    train, _, _ = noisy_cancer
    shadows = train_shadows(
        SklearnRecipe(LogisticRegression(max_iter=300)), train.x, train.y, n_models=4, num_classes=2
    )
    assert shadows.logp.shape == (4, 1, len(train), 2)
    assert 0.4 < shadows.keep.mean() < 0.6
    assert np.allclose(np.exp(shadows.logp).sum(-1), 1.0, atol=1e-4)


def test_shadows_train_identically_on_a_process_pool(noisy_cancer) -> None:  # type: ignore[no-untyped-def]
    train, _, _ = noisy_cancer
    recipe = SklearnRecipe(LogisticRegression(max_iter=300))
    local = train_shadows(recipe, train.x, train.y, n_models=2, num_classes=2, seed=3)
    pooled = train_shadows(
        recipe, train.x, train.y, n_models=2, num_classes=2, seed=3, executor="process=2"
    )
    np.testing.assert_allclose(local.logp, pooled.logp, atol=1e-6)


def test_a_user_trainer_named_module_function_trains_the_shadows(
    tmp_path, monkeypatch, noisy_cancer
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "my_recipe.py").write_text(
        "from sklearn.linear_model import LogisticRegression\n"
        "def train(x, y):\n"
        "    return LogisticRegression(max_iter=300).fit(x, y)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    train, _, _ = noisy_cancer
    shadows = train_shadows(
        TrainerRecipe("my_recipe:train"), train.x, train.y, n_models=2, num_classes=2
    )
    assert shadows.recipe == "my_recipe:train" and np.isfinite(shadows.logp).all()
    with pytest.raises(UserError, match="no function"):
        TrainerRecipe("my_recipe:missing").fit(train.x, train.y, 0)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-30, 30), min_size=3, max_size=6), st.integers(0, 2))
def test_logit_confidence_is_log_odds_of_the_true_class(logits: list[float], label: int) -> None:
    z = np.asarray(logits)
    logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
    p = np.exp(logp[label])
    phi = logit_confidence(logp[None, :], np.array([label]))[0]
    if 1e-6 < p < 1 - 1e-6:  # where float64 still resolves 1 - p
        assert phi == pytest.approx(np.log(p / (1 - p)), rel=1e-6, abs=1e-6)
    assert np.isfinite(phi)


def test_lira_queries_shifted_views_of_image_records(digits_halves) -> None:  # type: ignore[no-untyped-def]
    train, holdout = digits_halves
    train, holdout = train.subset(slice(0, 150)), holdout.subset(slice(0, 150))
    model = LogisticRegression(C=100.0, max_iter=300).fit(train.x.reshape(150, -1), train.y)
    target = SklearnTarget(model)
    recipe = SklearnRecipe(LogisticRegression(C=100.0, max_iter=300))
    result = audit_membership(
        target, train, holdout, attack="lira", recipe=recipe, shadows=2, views=3, pool=False
    )
    assert result.queries == 3 * 300 and result.config["views"] == 3
    assert np.isfinite(result.scores).all()
