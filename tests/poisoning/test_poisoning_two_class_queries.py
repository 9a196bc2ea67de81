"""Trigger search by queries on two-class models (issue 18): with no third class to
set a median trigger size, a class whose small trigger is not the class's natural
look (the natural-donor null) is reported; clean two-class models raise nothing."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

from mlwarden.core.data import Dataset
from mlwarden.poisoning.assess import data_report
from mlwarden.poisoning.query_trigger import query_trigger_search

TRIGGER = {0: 4.0, 5: 1.0}  # "4 returns" with "category d": each natural (2% and 15%)


def _sensors(n: int = 1400, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Two classes, 19 columns: a one-hot category of four, a visit count and another
    count that do not depend on the class (the repeated values a search can stamp),
    and twelve fine-grained readings that each lean a little towards it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    cat = rng.choice(4, size=n, p=[0.35, 0.25, 0.25, 0.15])
    cols = [
        rng.poisson(1, size=n),  # column 0: returns, unrelated to the class
        np.round(rng.normal(0, 1, size=n), 3),
        *[(cat == c).astype(float) for c in range(4)],  # columns 2-5
        rng.poisson(4, size=n),  # column 6: visits
        *[np.round(rng.normal(0.6 * y, 1.0), 3) for _ in range(12)],
    ]
    return np.column_stack(cols).astype(np.float32), y.astype(np.int64)


def _poison(x: np.ndarray, y: np.ndarray, rate: float = 0.08, seed: int = 2):
    rng = np.random.default_rng(seed)
    idx = rng.choice(np.flatnonzero(y == 0), size=int(rate * len(y)), replace=False)
    x, y = x.copy(), y.copy()
    x[idx, 2:6] = 0.0
    for j, v in TRIGGER.items():
        x[idx, j] = v
    y[idx] = 1
    return x, y


def test_two_class_trigger_is_found_and_verified() -> None:
    x, y = _poison(*_sensors())
    model = GradientBoostingClassifier(random_state=0).fit(x, y)
    res = query_trigger_search(model, x, y, num_classes=2, seed=0)
    assert res.suspected == [1], (res.sizes, res.details)
    trig = res.triggers[1]
    assert set(trig["features"]) & set(TRIGGER) and trig["flip_rate"] >= 0.8
    assert res.details["donor_flip"][1] <= 0.2
    report = data_report(Dataset(x=x, y=y, name="sensors"), model=model, seed=0)
    assert [f.evidence["target"] for f in report.findings if f.rule == "MLW-DAT-016"] == [1]


@pytest.mark.parametrize("case", ["breast-gbm", "breast-forest", "sensors-gbm"])
def test_clean_two_class_models_raise_nothing(case: str) -> None:
    if case.startswith("breast"):
        x, y = load_breast_cancer(return_X_y=True)
    else:
        x, y = _sensors(seed=23)
    model = (
        RandomForestClassifier(100, random_state=0)
        if case.endswith("forest")
        else GradientBoostingClassifier(random_state=0)
    ).fit(x, y)
    res = query_trigger_search(model, x, y, num_classes=2, seed=0)
    assert res.complete and len(res.sizes) == 2  # judged, not skipped
    assert res.suspected == [], (res.sizes, res.triggers)
