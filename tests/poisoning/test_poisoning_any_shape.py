"""Poisoning detectors on flat features and a plain MLP (issue 18): Neural Cleanse runs
over feature vectors, and every detector is listed with whether it ran."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from mlwarden.core.data import Dataset
from mlwarden.core.models import MLP, fit
from mlwarden.poisoning.assess import data_report
from mlwarden.poisoning.detect_model import neural_cleanse

TARGET = 2
TRIGGER = [0, 5, 11]  # feature indices the attacker sets to an extreme value


def _tabular(seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """40-feature, 8-class table scaled to [0, 1]; 8% of rows get the all-to-one trigger.

    With few classes or few informative features a natural class is reached by changing
    two or three features, as small as the planted trigger, and Neural Cleanse's
    anomaly index has nothing to stand out from; this table is one where it can.
    """
    x, y = make_classification(
        n_samples=1500,
        n_features=40,
        n_informative=30,
        n_redundant=0,
        n_classes=8,
        class_sep=2.0,
        random_state=seed,
    )
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    rng = np.random.default_rng(seed)
    poison = rng.choice(np.flatnonzero(y != TARGET), size=120, replace=False)
    x[np.ix_(poison, TRIGGER)] = 1.0
    y = y.copy()
    y[poison] = TARGET
    truth = np.zeros(len(y), dtype=bool)
    truth[poison] = True
    ds = Dataset(x=x.astype(np.float32), y=y.astype(np.int64), name="flat.npz")
    return ds, truth


@pytest.fixture(scope="module")
def poisoned_mlp() -> tuple[Dataset, np.ndarray, MLP]:
    ds, truth = _tabular()
    torch.manual_seed(0)
    model = MLP(40, 8, hidden=(64, 32))
    fit(model, ds.x, ds.y, epochs=30, seed=0)
    clean = ds.x[~truth & (ds.y != TARGET)][:200].copy()
    stamped = clean.copy()
    stamped[:, TRIGGER] = 1.0
    with torch.no_grad():
        asr = float((model(torch.as_tensor(stamped)).argmax(1) == TARGET).float().mean())
    assert asr >= 0.9, f"the planted trigger must work for the test to mean anything: {asr}"
    return ds, truth, model


def test_neural_cleanse_finds_a_feature_trigger(poisoned_mlp) -> None:
    ds, truth, model = poisoned_mlp
    nc = neural_cleanse(model, ds.x[~truth][:500], num_classes=8, epochs=60, seed=0)
    assert nc.masks.shape == (8, 40)
    assert nc.suspected_target == TARGET
    # the reversed mask sits on the planted features
    top = set(np.argsort(nc.masks[TARGET])[-len(TRIGGER) :].tolist())
    assert len(top & set(TRIGGER)) >= 2, nc.masks[TARGET]


def test_data_report_runs_neural_cleanse_on_flat_features(poisoned_mlp) -> None:
    ds, truth, model = poisoned_mlp
    report = data_report(ds, model=model, neural_cleanse_epochs=60)
    table = report.metrics["poisoning.detectors"]
    assert set(table) == {
        "feature-trigger",
        "activation-clustering",
        "spectral-signatures",
        "neural-cleanse",
        "trigger-occlusion",
        "strip",
        "cross-class",
    }
    assert table["neural-cleanse"]["ran"] and table["trigger-occlusion"]["ran"]
    assert report.metrics["suspected_target"] == TARGET
    assert "MLW-DAT-013" not in {f.rule for f in report.findings}
    assert any(c.name == "neural-cleanse" and c.status == "ok" for c in report.checks)
    flagged = np.zeros(len(ds), dtype=bool)
    flagged[[row["index"] for row in report.suspicious if row["score"] > 0]] = True
    assert "MLW-DAT-001" in {f.rule for f in report.findings}
    recall = (flagged & truth).sum() / truth.sum()
    assert recall >= 0.8, recall


def test_detector_that_cannot_run_is_a_finding(monkeypatch) -> None:
    """A scikit-learn MLP has activations but no gradients: Neural Cleanse is listed as not
    run, with why; the trigger search by queries replaces it, and when that cannot run
    either (here: a query budget too small) the report carries MLW-DAT-013 instead of a
    silent all-clear."""
    from sklearn.neural_network import MLPClassifier

    from mlwarden.poisoning import query_trigger

    monkeypatch.setattr(query_trigger, "LOCAL_BUDGET", 100)

    ds, _ = _tabular(seed=1)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(ds.x, ds.y)
    report = data_report(ds, model=clf)
    table = report.metrics["poisoning.detectors"]
    assert table["activation-clustering"]["ran"]
    assert not table["neural-cleanse"]["ran"]
    assert "no gradients" in table["neural-cleanse"]["why"]
    assert any(c.name == "neural-cleanse" and c.status == "skipped" for c in report.checks)
    missed = [f for f in report.findings if f.rule == "MLW-DAT-013"]
    assert len(missed) == 1 and "query-trigger" in missed[0].evidence["not_run"]
    assert "budget" in missed[0].evidence["not_run"]["query-trigger"]


def test_turned_off_search_is_listed_not_reported(poisoned_mlp) -> None:
    ds, _, model = poisoned_mlp
    report = data_report(ds, model=model, neural_cleanse_epochs=0)
    assert report.metrics["poisoning.detectors"]["neural-cleanse"]["ran"] is False
    assert "MLW-DAT-013" not in {f.rule for f in report.findings}


def test_trigger_search_runs_on_a_torchscript_model_without_activations(
    poisoned_mlp, tmp_path
) -> None:
    """A scripted MLP keeps only forward(): no penultimate layer for the clustering
    detectors (MLW-DAT-010), but the trigger search needs gradients only and still runs,
    through the real TorchScript loader, and finds the poison."""
    ds, truth, model = poisoned_mlp
    path = tmp_path / "mlp.pt"
    torch.jit.script(model.eval()).save(str(path))
    report = data_report(ds, model=str(path), neural_cleanse_epochs=60)
    table = report.metrics["poisoning.detectors"]
    assert not table["activation-clustering"]["ran"]
    assert table["neural-cleanse"]["ran"] and table["trigger-occlusion"]["ran"]
    rules = {f.rule for f in report.findings}
    assert {"MLW-DAT-010", "MLW-DAT-001"} <= rules
    assert report.metrics["suspected_target"] == TARGET
    hit = {row["index"] for row in report.suspicious if row["score"] > 0}
    assert len(hit & set(np.flatnonzero(truth).tolist())) >= 0.8 * truth.sum()
