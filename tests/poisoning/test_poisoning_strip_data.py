"""STRIP inside ``mlwarden data`` (issue 18): by queries only, so models without gradients
(scikit-learn trees, label-only APIs) are screened instead of 'cannot run'."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from mlwarden.core.data import load_dataset
from mlwarden.core.target import as_target
from mlwarden.poisoning.assess import data_report
from mlwarden.poisoning.detect_model import low_entropy_flags, strip_entropy, strip_in_data


def test_strip_flags_badnets_poison_in_the_training_data(backdoored) -> None:
    p = backdoored.poisoned
    det = strip_in_data(backdoored.model, p.dataset.x, p.dataset.y)
    hot = [c for c, v in det.details["classes"].items() if v["flagged"]]
    assert hot == [str(p.target)], det.details
    assert (det.flagged & p.is_poison).sum() >= 0.6 * p.is_poison.sum()
    assert (det.flagged & p.is_poison).sum() >= 0.9 * det.flagged.sum()


def test_strip_raises_no_alarm_on_clean_digits() -> None:
    """Natural low-entropy samples gather in confident classes; no class stands out."""
    from mlwarden.core.models import SmallCNN, fit

    ds = load_dataset("digits")
    model = fit(SmallCNN(1, 10, 8), ds.x, ds.y, epochs=8, seed=0)
    det = strip_in_data(model, ds.x, ds.y)
    assert not det.flagged.any(), det.details


def test_label_only_strip_uses_the_vote_entropy() -> None:
    """A labels-only answer has entropy 0 every time; the votes over the overlays do not."""
    ds = load_dataset("digits")
    x, y = ds.x.reshape(len(ds), -1), ds.y
    clf = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y)
    labels = as_target(clf, access="label")
    h = strip_entropy(labels, x[:40], x[100:400], n=20)
    assert np.all(h >= 0) and np.median(h) > 0.5, h


def test_data_with_a_tree_model_runs_strip_and_says_what_did_not_run() -> None:
    """Gradient boosting has neither gradients nor activations: STRIP and the trigger
    search screen the data by queries; Neural Cleanse and the clustering detectors are
    reported as not run, with why."""
    ds = load_dataset("digits")
    flat = ds.subset(np.arange(len(ds)))
    flat.x = ds.x.reshape(len(ds), -1)
    clf = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(flat.x, flat.y)
    report = data_report(flat, model=clf)
    table = report.metrics["poisoning.detectors"]
    assert table["strip"]["ran"]
    assert not table["neural-cleanse"]["ran"]
    assert "by queries runs instead" in table["neural-cleanse"]["why"]
    assert table["query-trigger"]["ran"] and report.metrics["query_trigger"]["complete"]
    assert not table["activation-clustering"]["ran"]
    # every detector that applies ran: no gap to report, and clean digits hold no trigger
    assert "MLW-DAT-013" not in {f.rule for f in report.findings}
    assert "MLW-DAT-016" not in {f.rule for f in report.findings}
    assert report.metrics["strip.data"]["screened"] == len(flat)


def _entropies(low_class_values: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes of 150 samples with entropies around 1.3 bits; class 4's first rows
    replaced by ``low_class_values``."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), 150)
    h = rng.normal(1.3, 0.25, size=len(y)).clip(0.0, None)
    idx = np.flatnonzero(y == 4)[: len(low_class_values)]
    h[idx] = low_class_values
    return h, y


def test_a_confident_class_just_under_the_threshold_is_not_a_trigger() -> None:
    """A naturally confident class has a tail just under STRIP's threshold (a clean
    40-feature table with an MLP: 16-18% of one class at 0.54-0.60 bits against a
    threshold of 0.65-0.74, which the share test alone flagged); trigger rows keep their
    prediction under almost every overlay, entropy near 0."""
    rng = np.random.default_rng(1)
    h, y = _entropies(np.full(30, 0.0))
    thr = low_entropy_flags(h, y, np.arange(len(h)))[2]
    h_tail, _ = _entropies(rng.uniform(0.8 * thr, 0.99 * thr, size=30))
    flagged, low, _, _, classes = low_entropy_flags(h_tail, y, np.arange(len(h)))
    assert low[y == 4].sum() >= 30 and not flagged.any()
    assert "not_flagged" in classes["4"]
    flagged, _, _, _, classes = low_entropy_flags(h, y, np.arange(len(h)))
    assert classes["4"]["flagged"] and flagged[y == 4].sum() >= 30
