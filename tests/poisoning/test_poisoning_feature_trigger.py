"""The data-only trigger detector (issue 18): feature values that alone predict one label,
at light and heavy poison rates, without a model; and no alarm on clean data sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, make_blobs

from mlwarden.core.data import Dataset, load_dataset, save_npz
from mlwarden.poisoning.assess import data_report
from mlwarden.poisoning.detect_data import flag_metrics
from mlwarden.poisoning.feature_triggers import feature_triggers

TARGET = 3
TRIGGER = {2: 0.95, 9: 0.05, 17: 0.95, 23: 0.5}  # feature -> value the attacker writes


def _blobs(n: int = 2400, features: int = 26, classes: int = 6, seed: int = 5) -> tuple:
    x, y = make_blobs(n, n_features=features, centers=classes, cluster_std=4.0, random_state=seed)
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    return x.astype(np.float32), y.astype(np.int64)


def _poison(x: np.ndarray, y: np.ndarray, share_of_target: float, seed: int = 0) -> tuple:
    """All-to-one: rows of other classes get the trigger values and the target label, so
    that poison makes up ``share_of_target`` of the rows labelled TARGET."""
    rng = np.random.default_rng(seed)
    clean_target = int(np.sum(y == TARGET))
    count = round(share_of_target * clean_target / (1 - share_of_target))
    rows = rng.choice(np.flatnonzero(y != TARGET), size=count, replace=False)
    x, y = x.copy(), y.copy()
    for f, v in TRIGGER.items():
        x[rows, f] = v
    y[rows] = TARGET
    truth = np.zeros(len(y), dtype=bool)
    truth[rows] = True
    return x, y, truth


@pytest.mark.parametrize("share", [0.45, 0.6])
def test_heavy_poison_is_found_without_a_model(share: float) -> None:
    """Poison at and above half of the target class (where clustering detectors see two
    equal halves) is found from the data alone, with the planted features named."""
    x, y, truth = _poison(*_blobs(), share)
    det = feature_triggers(x, y)
    m = flag_metrics(det.flagged, truth)
    assert m["f1"] >= 0.95, m
    (trig,) = det.details["triggers"]
    assert trig["target"] == TARGET
    assert set(trig["features"]) <= set(TRIGGER)
    assert len(trig["features"]) >= 3
    assert trig["reclassified_away"] >= 0.8


def test_light_poison_is_found() -> None:
    """1% of the data (24 rows) still carries enough mass for the association test."""
    x, y = _blobs()
    rng = np.random.default_rng(1)
    rows = rng.choice(np.flatnonzero(y != TARGET), size=24, replace=False)
    truth = np.zeros(len(y), dtype=bool)
    truth[rows] = True
    for f, v in TRIGGER.items():
        x[rows, f] = v
    y[rows] = TARGET
    m = flag_metrics(feature_triggers(x, y).flagged, truth)
    assert m["f1"] >= 0.9, m


def test_partial_trigger_rows_are_caught() -> None:
    """A row that carries three of the four trigger values is a carrier too."""
    x, y, truth = _poison(*_blobs(), 0.3, seed=2)
    one = np.flatnonzero(truth)[0]
    x[one, 23] = 0.123
    det = feature_triggers(x, y)
    assert det.flagged[one]
    assert det.scores[one] == pytest.approx(0.75)


def test_clean_digits_raise_no_alarm() -> None:
    """Digits has pixel values that alone predict a class (found and listed as
    unconfirmed), but the rest of each image explains the label: no trigger."""
    ds = load_dataset("digits")
    det = feature_triggers(ds.x, ds.y)
    assert not det.flagged.any(), det.details["triggers"]
    assert det.details["unconfirmed"], "the natural predictive pixels should be examined"


@pytest.mark.parametrize("name", ["breast_cancer", "blobs"])
def test_clean_tables_raise_no_alarm(name: str) -> None:
    if name == "breast_cancer":
        data = load_breast_cancer()
        x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    else:
        x, y = _blobs(seed=11)
        x = np.round(x, 2)  # coarse values repeat: every value has mass
    assert not feature_triggers(x, y).flagged.any()


def test_natural_category_that_predicts_the_label_is_not_a_trigger() -> None:
    """A binary column derived from the informative features (a 'large customer' flag)
    predicts a class on its own, but the other features back it up."""
    x, y = _blobs(seed=3)
    flag = (y == TARGET) & (x[:, 0] > np.median(x[:, 0]))
    x = np.column_stack([x, flag.astype(np.float32)])
    det = feature_triggers(x, y)
    assert not det.flagged.any()
    assert any(u["features"] == [x.shape[1] - 1] for u in det.details["unconfirmed"])


def test_label_column_is_not_a_trigger() -> None:
    """A column that copies the label for every class is leakage, not an all-to-one
    backdoor: it must not flag the whole data set."""
    x, y = _blobs(seed=4)
    x = np.column_stack([x, y.astype(np.float32)])
    assert not feature_triggers(x, y).flagged.any()


def test_data_audit_without_a_model_reports_the_trigger(tmp_path, capsys) -> None:
    """Through the CLI, data only: MLW-DAT-014, the rows in 'suspicious' with the reason,
    and the detector listed as run."""
    from mlwarden.cli.main import main

    x, y, truth = _poison(*_blobs(seed=6), 0.44, seed=3)
    path = tmp_path / "train.npz"
    save_npz(Dataset(x=x, y=y, name="train"), path)
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit):
        main(["data", str(path), "--json", str(out), "-q"])
    report = json.loads(out.read_text())
    rules = {f["rule"] for f in report["findings"]}
    assert "MLW-DAT-014" in rules
    assert report["metrics"]["poisoning.detectors"]["feature-trigger"]["ran"]
    hit = {
        e["index"]
        for e in report["suspicious"]
        if any(r.startswith("feature trigger") for r in e["reasons"])
    }
    assert hit == set(np.flatnonzero(truth).tolist())


def test_mitigation_uses_the_feature_trigger() -> None:
    """With a recipe and no trigger reversed by a model (scikit-learn), the found feature
    trigger is what the retrained model's attack success is measured with."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y, _ = _poison(*_blobs(n=1200, seed=8), 0.4, seed=4)
    ds = Dataset(x=x, y=y, name="train")
    report = data_report(ds, trainer=HistGradientBoostingClassifier(max_iter=30, random_state=0))
    mit = report.metrics["mitigation"]
    assert mit["asr_before"] >= 0.9, mit
    assert mit["asr_after"] <= 0.2, mit
