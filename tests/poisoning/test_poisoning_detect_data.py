"""Dataset detectors: poison found with good precision/recall, clean data mostly unflagged."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.core.errors import UserError
from mlwarden.poisoning import detect_data as dd
from mlwarden.poisoning.activations import penultimate
from mlwarden.poisoning.simulate import flip_labels


def test_confident_learning_finds_random_label_flips(digits_split):
    train, _ = digits_split
    p = flip_labels(train, 0.05, seed=0)
    det = dd.label_issues(p.dataset.x, p.dataset.y, seed=0)
    m = dd.flag_metrics(det.flagged, p.is_poison)
    assert m["tpr"] >= 0.8
    assert m["precision"] >= 0.7


def test_confident_learning_flags_little_of_clean_data(digits_split):
    train, _ = digits_split
    det = dd.label_issues(train.x, train.y, seed=0)
    assert det.flagged.mean() < 0.02


def test_spectral_signatures_rank_badnets_poison_first_in_the_target_class(backdoored):
    p = backdoored.poisoned
    acts = penultimate(backdoored.model, p.dataset.x)
    det = dd.spectral_signatures(acts, p.dataset.y, eps=0.05)
    in_target = p.dataset.y == p.target
    flagged_there = det.flagged & in_target
    assert flagged_there.sum() > 0
    assert dd.flag_metrics(flagged_there, p.is_poison)["precision"] >= 0.9
    # per class it removes 1.5 * eps of the class, as Tran et al. do
    assert flagged_there.sum() == int(1.5 * 0.05 * in_target.sum())


def test_activation_clustering_reports_every_class(backdoored):
    p = backdoored.poisoned
    acts = penultimate(backdoored.model, p.dataset.x)
    det = dd.activation_clustering(acts, p.dataset.y, seed=0)
    assert set(det.details) == {str(c) for c in range(10)}
    for stats in det.details.values():
        assert 0.0 < stats["relative_size"] <= 0.5
    assert all(det.scores[det.flagged] > 0)


def test_duplicates_with_conflicting_labels_are_found(digits_split):
    train, _ = digits_split
    x = np.concatenate([train.x, train.x[:5], train.x[10:13] + 1e-4])
    y = np.concatenate([train.y, (train.y[:5] + 1) % 10, train.y[10:13]])
    det = dd.duplicates(x, y)
    n = len(train)
    assert set(np.flatnonzero(det.flagged)) == set(range(n, n + 8))
    assert det.details["exact"] == 5 and det.details["label_conflicts"] == 5
    assert all("different label" in det.reasons[i] for i in range(n, n + 5))


def test_digits_has_no_duplicates(digits_split):
    train, _ = digits_split
    assert not dd.duplicates(train.x, train.y).flagged.any()


def test_outliers_catch_injected_noise_images(digits_split):
    train, _ = digits_split
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 1, size=(6, *train.x.shape[1:])).astype(np.float32)
    x = np.concatenate([train.x, noise])
    det = dd.outliers(x, seed=0)
    injected = np.zeros(len(x), dtype=bool)
    injected[len(train) :] = True
    m = dd.flag_metrics(det.flagged, injected)
    assert m["tpr"] == 1.0
    assert m["fpr"] < 0.01


def test_rank_merges_reasons_and_orders_by_score():
    n = 6
    a = dd.Detection(
        "a",
        np.arange(n, dtype=float),
        np.array([0, 0, 0, 1, 1, 1], bool),
        {3: "a3", 4: "a4", 5: "a5"},
    )
    b = dd.Detection(
        "b", np.arange(n, dtype=float)[::-1], np.array([0, 1, 0, 0, 0, 1], bool), {1: "b1", 5: "b5"}
    )
    out = dd.rank([a, b])
    assert out[0]["index"] == 5 and out[0]["reasons"] == ["a5", "b5"]
    assert [o["index"] for o in out] == sorted(
        [o["index"] for o in out], key=lambda i: -next(o["score"] for o in out if o["index"] == i)
    )
    assert {o["index"] for o in out} == {1, 3, 4, 5}
    assert all(set(o) == {"index", "score", "reasons"} for o in out)


def test_flag_metrics_counts():
    truth = np.array([1, 1, 0, 0, 0], bool)
    m = dd.flag_metrics(np.array([1, 0, 1, 0, 0], bool), truth)
    assert (m["tpr"], m["fpr"], m["precision"], m["f1"]) == (0.5, 0.3333, 0.5, 0.5)
    assert dd.flag_metrics(np.array([0, 2]), truth)["tpr"] == 0.5


def test_detectors_refuse_mismatched_inputs():
    with pytest.raises(UserError, match="labels"):
        dd.spectral_signatures(np.zeros((20, 4)), np.zeros(19, dtype=int))
