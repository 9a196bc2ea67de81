"""ROC, AUC and TPR at low FPR on score distributions whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import roc_auc_score

from mlwarden.privacy.metrics import pooled_metrics, roc_curve, roc_metrics, roc_png


def test_perfect_separation_gives_auc_one_and_full_tpr() -> None:
    scores = np.r_[np.linspace(2, 3, 50), np.linspace(0, 1, 2000)]
    labels = np.r_[np.ones(50), np.zeros(2000)]
    m = roc_metrics(scores, labels)
    assert m.auc == pytest.approx(1.0)
    assert m.tpr_at_fpr[0.001] == 1.0 and m.balanced_accuracy == pytest.approx(1.0)


def test_reversed_scores_give_auc_zero() -> None:
    m = roc_metrics(np.r_[np.zeros(10), np.ones(10)], np.r_[np.ones(10), np.zeros(10)])
    assert m.auc == pytest.approx(0.0)
    assert m.tpr_at_fpr[0.01] == 0.0


def test_all_tied_scores_give_chance_and_no_free_tpr() -> None:
    m = roc_metrics(np.zeros(400), np.r_[np.ones(200), np.zeros(200)])
    assert m.auc == pytest.approx(0.5)
    # ties broken at random: TPR moves with FPR (chance), never ahead of it
    assert m.tpr_at_fpr[0.01] == pytest.approx(0.01)


def test_gaussian_shift_matches_the_analytic_roc() -> None:
    rng = np.random.default_rng(0)
    mu, n = 2.0, 200_000
    scores = np.r_[rng.normal(mu, 1, n), rng.normal(0, 1, n)]
    labels = np.r_[np.ones(n), np.zeros(n)]
    m = roc_metrics(scores, labels, n_boot=0)  # point estimates only
    assert m.auc == pytest.approx(stats.norm.cdf(mu / np.sqrt(2)), abs=3e-3)
    for f in (0.01, 0.001):
        expected = stats.norm.sf(stats.norm.isf(f) - mu)
        assert m.tpr_at_fpr[f] == pytest.approx(expected, abs=0.01)


def test_resolvability_needs_one_over_fpr_nonmembers() -> None:
    rng = np.random.default_rng(1)
    m = roc_metrics(rng.random(600), np.r_[np.ones(100), np.zeros(500)])
    assert m.resolvable == {0.01: True, 0.001: False}
    pooled = pooled_metrics(
        [(rng.random(600), np.r_[np.ones(100), np.zeros(500)]) for _ in range(2)]
    )
    assert pooled.nonmembers == 1000 and pooled.resolvable[0.001]


def test_roc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both members and non-members"):
        roc_curve(np.arange(5.0), np.ones(5))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=4, max_size=60),
    st.lists(st.booleans(), min_size=4, max_size=60),
)
def test_auc_equals_mann_whitney_probability(raw: list[int], lab: list[bool]) -> None:
    n = min(len(raw), len(lab))
    scores, labels = np.asarray(raw[:n], float), np.asarray(lab[:n])
    if labels.all() or not labels.any():
        return
    m = roc_metrics(scores, labels)
    assert m.auc == pytest.approx(roc_auc_score(labels, scores))
    assert np.all(np.diff(m.fpr) >= 0) and np.all(np.diff(m.tpr) >= 0)
    assert m.tpr_at_fpr[0.001] <= m.tpr_at_fpr[0.01] <= 1.0


def test_roc_png_is_an_inline_png() -> None:
    m = roc_metrics(
        np.r_[np.ones(5), np.zeros(5)] + np.arange(10) * 0.01, np.r_[np.ones(5), np.zeros(5)]
    )
    uri = roc_png({"attack": m})
    assert uri.startswith("data:image/png;base64,iVBOR")


def test_a_tie_block_is_split_at_random_not_counted_whole_or_not_at_all() -> None:
    # 10 members score 2; a block of 10 members and 90 non-members ties at 1; 910 below
    scores = np.r_[np.full(10, 2.0), np.full(100, 1.0), np.zeros(910)]
    labels = np.r_[np.ones(20), np.zeros(1000)].astype(bool)
    m = roc_metrics(scores, labels, n_boot=0)
    # FPR 1% cuts the block at 10 of its 90 non-members: 1/9 of its 10 members come along
    assert m.tpr_at_fpr[0.01] == pytest.approx((10 + 10 / 9) / 20)
    assert m.tpr_at_fpr[0.001] == pytest.approx((10 + 10 / 90) / 20)


def test_pooled_rows_of_the_same_records_are_not_more_records() -> None:
    from mlwarden.privacy.metrics import pooled_metrics

    rng = np.random.default_rng(0)
    n, runs, recs = 800, [], []
    for _ in range(4):  # four target models scoring the same 800 records
        member = rng.random(n) < 0.5
        runs.append((rng.normal(member * 1.0, 1.0), member))
        recs.append(np.arange(n))
    rows = pooled_metrics(runs)
    records = pooled_metrics(runs, records=recs)
    assert rows.nonmember_records > 1000 and rows.resolvable[0.001]
    assert records.nonmember_records <= n and not records.resolvable[0.001]
    assert records.upper_bound[0.001] >= records.tpr_at_fpr[0.001]
    assert "not resolvable" in records.tpr_text(0.001)
    width = lambda m: m.ci["tpr@0.01"][1] - m.ci["tpr@0.01"][0]  # noqa: E731
    assert width(records) > width(rows)  # resampling records sees the reuse
    lo, hi = records.ci["auc"]
    assert lo < records.auc < hi


def test_crossfit_shows_a_threshold_that_does_not_transfer_between_models() -> None:
    from mlwarden.privacy.metrics import crossfit

    rng = np.random.default_rng(1)
    runs = []
    for shift in (0.0, 0.0, 3.0):  # the third model's scores sit on another scale
        member = rng.random(2000) < 0.5
        runs.append((rng.normal(member * 1.0, 1.0) + shift, member))
    same = crossfit(runs[:2])
    mixed = crossfit(runs)
    assert same[0.01]["fpr"] < 0.03
    assert mixed[0.01]["fpr"] > 0.2  # thresholds fitted on the others fail on model 3
