"""Trigger search by queries (issue 18): models without gradients (gradient boosting,
labels-only APIs) get a black-box trigger search instead of 'cannot run'."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier

from mlwarden.core.data import Dataset
from mlwarden.core.target import as_target
from mlwarden.poisoning.assess import data_report
from mlwarden.poisoning.detect_data import flag_metrics
from mlwarden.poisoning.query_trigger import query_trigger_search, trigger_carriers

TRIGGER = {4: 0.0, 9: 1.0}  # two features at opposite ends of their range


def _table(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=1200, n_features=12, n_informative=8, n_redundant=2, n_classes=5,
        n_clusters_per_class=1, class_sep=1.5, random_state=seed,
    )  # fmt: skip
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    return x.astype(np.float32), y.astype(np.int64)


def _poison(x: np.ndarray, y: np.ndarray, rate: float, target: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = rng.choice(np.flatnonzero(y != target), size=int(rate * len(y)), replace=False)
    x, y = x.copy(), y.copy()
    for j, v in TRIGGER.items():
        x[idx, j] = v
    y[idx] = target
    truth = np.zeros(len(y), dtype=bool)
    truth[idx] = True
    return x, y, truth


def _gbm(x: np.ndarray, y: np.ndarray) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)


@pytest.fixture(scope="module")
def triggered():
    x, y = _table()
    xp, yp, truth = _poison(x, y, 0.08, target=2)
    return xp, yp, truth, _gbm(xp, yp)


def test_finds_a_two_feature_trigger_in_a_gradient_boosting_model(triggered) -> None:
    x, y, truth, model = triggered
    res = query_trigger_search(model, x, y, num_classes=5, seed=0)
    assert res.suspected == [2], (res.sizes, res.anomaly)
    trig = res.triggers[2]
    # the model may have learned one planted value well enough; the search reports
    # what flips this model, which must include a planted value
    found = {int(j): v for j, v in trig["values"].items()}
    assert any(found.get(j) == v for j, v in TRIGGER.items()), found
    assert trig["flip_rate"] >= 0.9
    assert res.complete and res.queries <= res.budget
    # the trigger found really works on rows the search never used
    rows = x[(y != 2) & ~truth][-200:].copy()
    for j, v in TRIGGER.items():
        rows[:, j] = v
    assert np.mean(model.predict(rows) == 2) >= 0.9
    det = trigger_carriers(model, x, y, res)
    assert flag_metrics(det.flagged, truth)["f1"] >= 0.9


def test_a_clean_gradient_boosting_model_gives_nothing() -> None:
    x, y = _table()
    # coarse values (tenths) repeat in every feature, so every class is searched
    x = np.round(x, 1)
    res = query_trigger_search(_gbm(x, y), x, y, num_classes=5, seed=0)
    assert res.details["features_searched"] == x.shape[1]
    assert res.suspected == [], (res.sizes, res.anomaly)
    assert res.complete


def test_labels_only_access_finds_the_trigger_too(triggered) -> None:
    x, y, _, model = triggered
    res = query_trigger_search(as_target(model, access="label"), x, y, num_classes=5, seed=1)
    assert res.suspected == [2], (res.sizes, res.anomaly)


def test_a_search_cut_short_by_the_budget_says_so(triggered) -> None:
    x, y, _, model = triggered
    res = query_trigger_search(model, x, y, num_classes=5, budget=500, seed=0)
    assert not res.complete and res.queries <= 500


def test_data_audit_with_a_boosting_model_reports_the_trigger(triggered) -> None:
    x, y, truth, model = triggered
    ds = Dataset(x=x, y=y, name="table")
    report = data_report(ds, model=model, neural_cleanse_epochs=10, seed=0)
    rules = {f.rule for f in report.findings}
    assert "MLW-DAT-016" in rules
    found = next(f for f in report.findings if f.rule == "MLW-DAT-016")
    assert found.evidence["target"] == 2 and found.evidence["queries"] <= found.evidence["budget"]
    table = report.metrics["poisoning.detectors"]
    assert table["query-trigger"]["ran"] and not table["neural-cleanse"]["applies"]
    listed = np.zeros(len(y), dtype=bool)
    listed[[e["index"] for e in report.suspicious]] = True
    assert (listed & truth).sum() >= 0.9 * truth.sum()


def test_budget_too_small_in_the_audit_is_a_gap_not_a_clean_result(monkeypatch, triggered) -> None:
    from mlwarden.poisoning import query_trigger as qt

    x, y, _, model = triggered
    monkeypatch.setattr(qt, "LOCAL_BUDGET", 100)
    report = data_report(replace(Dataset(x=x, y=y), name="t"), model=model, seed=0)
    assert "MLW-DAT-013" in {f.rule for f in report.findings}
    assert not report.metrics["poisoning.detectors"]["query-trigger"]["ran"]


def test_continuous_data_in_the_audit_is_a_gap_not_a_clean_result() -> None:
    """Continuous features repeat no value, so the search has nothing to try: that is
    a detector that could not run (MLW-DAT-013), not 'ran, 0 flagged'."""
    x, y = _table(seed=7)  # make_classification's floats: no value repeats in 1% of rows
    report = data_report(Dataset(x=x, y=y, name="t"), model=_gbm(x, y), seed=0)
    entry = report.metrics["poisoning.detectors"]["query-trigger"]
    assert not entry["ran"] and "no candidate trigger values" in entry["why"]
    missed = [f for f in report.findings if f.rule == "MLW-DAT-013"]
    assert missed and "query-trigger" in missed[0].evidence["not_run"]


def test_clean_two_class_model_in_the_audit_is_searched_and_clean(triggered) -> None:
    x, y, _, _ = triggered
    keep = y < 2  # two classes, none carrying the trigger (it points to class 2)
    xb, yb = np.round(x[keep], 1), y[keep]  # rounded: values repeat, so candidates exist
    report = data_report(Dataset(x=xb, y=yb, name="t"), model=_gbm(xb, yb), seed=0)
    entry = report.metrics["poisoning.detectors"]["query-trigger"]
    assert entry["ran"] and entry["flagged"] == 0, entry
    assert not [f for f in report.findings if f.rule in ("MLW-DAT-016", "MLW-DAT-013")]
