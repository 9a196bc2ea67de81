"""A whole class relabelled with no row of it left (issue 18): the counts find the
merged class, outside evidence (trusted reference rows, a model trained elsewhere)
names the relabelled half, and without it the listing says it cannot tell."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mlwarden.core.data import Dataset, load_dataset
from mlwarden.poisoning.assess import data_report
from mlwarden.poisoning.detect_data import flag_metrics
from mlwarden.poisoning.label_flips import relabelled_classes
from mlwarden.poisoning.simulate import flip_labels


@pytest.fixture(scope="module")
def digits_split() -> tuple[Dataset, Dataset]:
    return load_dataset("digits").split(test_size=0.25, seed=0)


def _whole(train: Dataset, source: int, target: int):
    share = float(np.mean(train.y == source))
    return flip_labels(train, share, mode="targeted", source=source, target=target, seed=0)


def test_reference_rows_name_the_relabelled_half(digits_split) -> None:
    # every 5 relabelled 8 (look-alikes: the merged class splits no more distinctly than
    # one real class); the held-out split, trusted, says which rows are 5s
    train, test = digits_split
    p = _whole(train, source=5, target=8)
    assert not np.any(p.dataset.y == 5)
    report = data_report(p.dataset, reference=test, seed=0)
    rows = [r["index"] for r in report.artifacts["data_issues"]["relabelled_class"]]
    listed = np.zeros(len(p.dataset), dtype=bool)
    listed[rows] = True
    m = flag_metrics(listed, p.is_poison)
    assert m["precision"] >= 0.95 and m["tpr"] >= 0.85, m
    (f,) = [f for f in report.findings if f.rule == "MLW-DAT-018"]
    assert f.severity.value == "high" and f.evidence["evidence"] == "reference"
    assert (f.evidence["class"], f.evidence["source"]) == (8, 5)


def test_a_model_trained_elsewhere_names_the_half(digits_split) -> None:
    train, test = digits_split
    p = _whole(train, source=1, target=0)
    clean = LogisticRegression(max_iter=2000).fit(test.x.reshape(len(test), -1), test.y)

    def predict(idx: np.ndarray) -> np.ndarray:
        return clean.predict(p.dataset.x[idx].reshape(len(idx), -1))

    det = relabelled_classes(p.dataset.x, p.dataset.y, num_classes=10, predict=predict)
    m = flag_metrics(det.flagged, p.is_poison)
    # recall is the outside model's own recall of class 1 (a linear model: about 0.8)
    assert m["precision"] >= 0.95 and m["tpr"] >= 0.75, m
    (cls,) = det.details["classes"]
    assert cls["evidence"] == "model" and not cls.get("ambiguous")


def test_without_evidence_the_class_is_listed_as_ambiguous_and_ranked_lower(
    digits_split,
) -> None:
    train, _ = digits_split
    # one whole class relabelled (no row left: ambiguous) and half of another (decided)
    p = _whole(train, source=5, target=8)
    half = flip_labels(p.dataset, 0.05, mode="targeted", source=1, target=0, seed=0)
    ds, y = half.dataset, half.dataset.y
    report = data_report(ds, seed=0)
    found = {f.evidence["class"]: f for f in report.findings if f.rule == "MLW-DAT-018"}
    assert set(found) == {8, 0}
    amb = found[8]
    assert amb.evidence["ambiguous"] and amb.evidence["source"] == 5
    assert amb.severity.value == "medium" and "which half" in amb.title
    assert found[0].severity.value == "high" and found[0].evidence["source"] == 1
    listed = report.artifacts["data_issues"]["relabelled_class"]
    assert {r["index"] for r in listed} >= set(np.flatnonzero(y == 8).tolist())
    # decided rows come first: every ambiguous row scores below every decided one
    first_ambiguous = min(i for i, r in enumerate(listed) if y[r["index"]] == 8)
    assert all(y[r["index"]] == 0 for r in listed[:first_ambiguous])
    assert first_ambiguous >= 60


def test_clean_twins_with_an_empty_label_stay_quiet(digits_split, imbalanced_table) -> None:
    train, test = digits_split
    # balanced digits whose class 9 was dropped (not merged): a label with no row, but
    # no class holds two classes' worth
    keep = train.y != 9
    det = relabelled_classes(
        train.x[keep], train.y[keep], num_classes=10, reference=(test.x, test.y)
    )
    assert not det.flagged.any(), det.details
    # imbalanced multi-cluster tables with an empty label declared: a big class of
    # several clusters next to an empty label is not a flip when the rest are unequal
    for seed in (3, 5, 9):
        x, y, k = imbalanced_table(seed)
        det = relabelled_classes(x, y, num_classes=k + 1, seed=0)
        assert not det.flagged.any(), (seed, det.details)


def test_reference_of_other_inputs_fails_closed(digits_split) -> None:
    from mlwarden.core.errors import UserError

    train, _ = digits_split
    flat = Dataset(x=train.x.reshape(len(train), -1)[:, :32], y=train.y, name="narrow")
    with pytest.raises(UserError, match="must match"):
        data_report(train, reference=flat, seed=0)
