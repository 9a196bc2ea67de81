"""Heavy and blended poison (issue 18): the cross-class detector finds a dense blended
trigger past half of the target class, on images and on a table, and stays quiet on
clean data; ``data`` reports it (MLW-DAT-017) and lists its rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification

from mlwarden.core.data import Dataset, load_dataset
from mlwarden.poisoning.assess import data_report
from mlwarden.poisoning.cross_class import cross_class_modes
from mlwarden.poisoning.detect_data import flag_metrics
from mlwarden.poisoning.simulate import blended

TARGET = 3


def _table(seed: int = 5, n: int = 2000) -> Dataset:
    """An 8-class, 30-feature table scaled to [0, 1], built unlike the benchmark's
    (10 classes, 40 features)."""
    x, y = make_classification(
        n_samples=n,
        n_features=30,
        n_informative=18,
        n_redundant=4,
        n_classes=8,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=seed,
    )
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    return Dataset(x=x.astype(np.float32), y=y.astype(np.int64), name="table")


def test_blend_past_half_of_the_class_is_listed_by_the_data_audit(
    digits_split: tuple[Dataset, Dataset],
) -> None:
    """25% of the data is 72% of the target class: activation clustering and spectral
    signatures assume a small poisoned share; this one is found without a model."""
    train, _ = digits_split
    p = blended(train, 0.25, target=TARGET, seed=1)
    assert p.is_poison[p.dataset.y == TARGET].mean() > 0.7
    report = data_report(p.dataset, seed=0)
    rules = [f for f in report.findings if f.rule == "MLW-DAT-017"]
    assert len(rules) == 1 and rules[0].evidence["class"] == TARGET
    listed = np.zeros(len(p.is_poison), dtype=bool)
    listed[[r["index"] for r in report.suspicious]] = True
    m = flag_metrics(listed, p.is_poison)
    assert m["tpr"] >= 0.95 and m["precision"] >= 0.95, m
    row = report.metrics["poisoning.detectors"]["cross-class"]
    assert row["ran"] is True and row["flagged"] >= 0.95 * p.is_poison.sum()
    flagged_classes = [c for c, s in report.metrics["cross_class.classes"].items() if s["flagged"]]
    assert flagged_classes == [str(TARGET)]


@pytest.mark.parametrize("seed", [5, 9])
def test_heavy_blend_on_a_table_is_found(seed: int) -> None:
    """25% of the data, about two thirds of the target class."""
    train, _ = _table(seed).split(test_size=0.25, seed=0)
    p = blended(train, 0.25, target=TARGET, seed=2)
    det = cross_class_modes(p.dataset.x, p.dataset.y)
    m = flag_metrics(det.flagged, p.is_poison)
    assert m["tpr"] >= 0.9 and m["precision"] >= 0.9, (m, det.details)
    assert [c for c, s in det.details["classes"].items() if s["flagged"]] == [str(TARGET)]


def test_clean_data_has_no_flagged_class(digits_split: tuple[Dataset, Dataset]) -> None:
    for ds in (digits_split[0], _table(seed=9)):
        det = cross_class_modes(ds.x, ds.y)
        assert not det.flagged.any(), det.details
        assert all(not s["flagged"] for s in det.details["classes"].values())
        # the gate is not a near miss: every clean class sits well under it
        assert max(s["gap"] for s in det.details["classes"].values()) < 0.25


def test_two_classes_are_not_examined_and_the_audit_says_why() -> None:
    ds = load_dataset("breast-cancer")
    det = cross_class_modes(ds.x, ds.y)
    assert not det.flagged.any() and "3 classes" in det.details["skipped"]
    report = data_report(ds, seed=0)
    row = report.metrics["poisoning.detectors"]["cross-class"]
    assert row["ran"] is False and row["applies"] is False and "3 classes" in row["why"]
    assert not [f for f in report.findings if f.rule in ("MLW-DAT-017", "MLW-DAT-013")]


def test_natural_sub_styles_of_a_class_are_not_flagged() -> None:
    """A class made of two genuine, well separated groups (here two clusters per class,
    one much larger) splits cleanly, but neither group reads as other classes."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, size=(5, 2, 12))
    x = np.concatenate(
        [c[g] + rng.normal(0, 1, (150 if g else 60, 12)) for c in centres for g in (0, 1)]
    )
    y = np.repeat(np.arange(5), 210)
    det = cross_class_modes(x.astype(np.float32), y)
    assert not det.flagged.any(), det.details
