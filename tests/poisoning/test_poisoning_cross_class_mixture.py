"""Blends the cross-class reader cannot see (issue 18, MNIST-5k): a linear reader of the
other classes is confident on clean MNIST rows too, so a blended component's confidence
gap stays under the reader's gate. The mixture test (a nearest-neighbour two-sample
test of the component, centred and rescaled, against the other classes' rows) finds it;
clean twins stay quiet."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.core.data import Dataset, load_dataset
from mlwarden.poisoning.assess import data_report
from mlwarden.poisoning.cross_class import (
    MAX_MIX_LOW,
    MIN_GAP,
    MIN_MIX_GAP,
    cross_class_modes,
)
from mlwarden.poisoning.detect_data import flag_metrics
from mlwarden.poisoning.simulate import blended

TARGET = 3


@pytest.fixture(scope="module")
def mnist_small() -> Dataset:
    """1,600 MNIST-5k rows (28x28): small enough for a test, as hard for the reader."""
    ds = load_dataset("mnist5k")
    keep, _ = ds.split(test_size=1 - 1600 / len(ds), seed=4)
    return keep


def test_mnist_blend_under_the_reader_gate_is_found(mnist_small: Dataset) -> None:
    p = blended(mnist_small, 0.10, target=TARGET, seed=4)
    report = data_report(p.dataset, seed=0)
    classes = report.metrics["cross_class.classes"]
    # the case the reader alone missed: its gap is under its own gate
    assert classes[str(TARGET)]["gap"] < MIN_GAP, classes[str(TARGET)]
    assert [c for c, s in classes.items() if s["flagged"]] == [str(TARGET)], classes
    assert classes[str(TARGET)]["test"] == "mixture"
    # the poisoned component sits near chance (0.5), the genuine rows far from it
    low, high = sorted(classes[str(TARGET)]["mix"])
    assert low <= MAX_MIX_LOW < 0.8 < high
    rules = [f for f in report.findings if f.rule == "MLW-DAT-017"]
    assert len(rules) == 1 and rules[0].evidence["class"] == TARGET
    assert "nearest neighbours" in rules[0].description
    listed = np.zeros(len(p.is_poison), dtype=bool)
    listed[[r["index"] for r in report.suspicious]] = True
    m = flag_metrics(listed, p.is_poison)
    assert m["tpr"] >= 0.9 and m["precision"] >= 0.9, m


def test_clean_mnist_twin_is_quiet(mnist_small: Dataset) -> None:
    det = cross_class_modes(mnist_small.x, mnist_small.y)
    classes = det.details["classes"]
    assert not det.flagged.any(), classes
    tested = [s for s in classes.values() if s["mix"][0] is not None]
    # classes with enough rows are tested, and none is a near miss
    assert len(tested) >= 3, classes
    assert max(s["mix_gap"] for s in tested) < MIN_MIX_GAP - 0.05, classes
