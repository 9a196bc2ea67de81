"""The combined ``suspicious`` list prefers rows a specific detector confirms (issue 18):
light poison found exactly by a trigger detector is not diluted by a broad detector's
clusters of clean rows, which stay visible per detector."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlwarden.core.data import Dataset
from mlwarden.core.models import SmallCNN, fit
from mlwarden.poisoning.assess import data_report
from mlwarden.poisoning.detect_data import Detection
from mlwarden.poisoning.ranking import combine

K, PER, TARGET = 10, 100, 3


def _det(name: str, scores: np.ndarray, flagged: np.ndarray) -> Detection:
    reasons = {int(i): f"{name}: flagged" for i in np.flatnonzero(flagged)}
    return Detection(name, scores, flagged, reasons)


def _light_poison(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[Detection]]:
    """1% poison (10 rows of class 3): the feature-trigger detector flags exactly them;
    activation clustering flags a cluster of class 3 holding 8 of them and 22 clean
    rows that sit less deep in it, plus sub-style clusters of classes 5 and 8 (as on
    MNIST-5k and the log-mel sounds); STRIP flags a low-entropy tail of class 3."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), PER)
    members = np.flatnonzero(y == TARGET)
    truth = np.zeros(len(y), dtype=bool)
    truth[members[:10]] = True
    trig = _det("feature-trigger", truth * 1.0, truth.copy())
    ac = np.zeros(len(y), dtype=bool)
    ac[members[2:40]] = True  # 8 poison rows, 30 clean ones
    for c in (5, 8):
        ac[np.flatnonzero(y == c)[:25]] = True
    sil = np.where(truth, rng.uniform(1.7, 1.9, len(y)), rng.uniform(1.3, 1.75, len(y)))
    clustering = _det("activation-clustering", np.where(ac, sil, 0.0), ac)
    entropy_drop = rng.normal(0.0, 1.0, len(y)) + 4.0 * truth
    strip = (y == TARGET) & (entropy_drop > 1.5)
    return y, truth, [trig, clustering, _det("strip", entropy_drop, strip)]


def test_light_poison_is_not_diluted_by_a_broad_detectors_clean_clusters() -> None:
    y, truth, dets = _light_poison()
    ranked = combine(dets, y)
    listed = {r["index"] for r in ranked.suspicious}
    poison = set(np.flatnonzero(truth).tolist())
    # the union (the rule before) listed every flagged row: 10 poison among 90+
    flagged = set(np.flatnonzero(dets[1].flagged | dets[2].flagged).tolist())
    assert len(flagged - poison) >= 80
    assert poison <= listed
    assert len(listed - poison) <= 2, sorted(listed - poison)
    # the broad detectors' flags are still reported, with why each was set aside
    ac = ranked.calibration["activation-clustering"]
    assert ac["flagged"] == 88 and ac["set_aside"] >= 75
    aside = {r["index"]: r for r in ranked.set_aside}
    assert not set(aside) & listed and set(aside) | listed == flagged | poison
    other = int(np.flatnonzero(y == 5)[0])
    assert aside[other]["detectors"] == ["activation-clustering"]
    assert "class 5: feature-trigger flagged nothing in it" in aside[other]["why"]
    # in the poisoned class: a cluster mostly of unconfirmed rows is another
    # structure; STRIP's unconfirmed tail scores below its confirmed rows
    inside = [i for i in aside if y[i] == TARGET]
    assert any("only 8 of its 38 rows" in aside[i]["why"] for i in inside)
    assert any("strip: class 3: scores below" in aside[i]["why"] for i in inside)


def test_without_a_specific_detector_the_broad_detectors_still_list_the_poison() -> None:
    """Where only activation clustering finds the poison (no trigger detector fires),
    its rows stand alone as before: recall does not depend on confirmation."""
    y, truth, dets = _light_poison()
    ranked = combine(dets[1:], y)
    listed = {r["index"] for r in ranked.suspicious}
    assert set(np.flatnonzero(dets[1].flagged).tolist()) <= listed
    assert ranked.set_aside == []


def test_clean_twin_lists_nothing() -> None:
    """The same detectors on clean data: nothing crosses a detector's own class-level
    test, so nothing is listed or set aside."""
    y = np.repeat(np.arange(K), PER)
    rng = np.random.default_rng(1)
    none = np.zeros(len(y), dtype=bool)
    dets = [
        _det("feature-trigger", none * 1.0, none.copy()),
        _det("activation-clustering", none * 0.0, none.copy()),
        _det("strip", rng.normal(0.0, 1.0, len(y)), none.copy()),
    ]
    ranked = combine(dets, y)
    assert ranked.suspicious == [] and ranked.set_aside == []


def test_data_report_lists_the_confirmed_poison_and_shows_what_it_set_aside(
    backdoored: Any, digits_split: tuple[Dataset, Dataset]
) -> None:
    """Through the audit, on a real model: BadNets at 5% of digits, which the feature
    trigger and cross-class detectors find exactly while activation clustering adds
    clusters of clean rows and STRIP a clean tail (list precision 0.68 before). The
    list is the poison; the report still shows every detector's own flags. The clean
    twin (the same recipe on the clean split) lists nothing."""
    from mlwarden.report.html import render_html

    p = backdoored.poisoned
    report = data_report(p.dataset, model=backdoored.model, neural_cleanse_epochs=0)
    listed = {r["index"] for r in report.suspicious or []}
    poison = set(p.poison_index.tolist())
    assert listed == poison
    table = report.metrics["poisoning.detectors"]
    ac = table["activation-clustering"]
    assert ac["flagged"] > ac["listed"] and ac["set_aside"] == ac["flagged"] - ac["listed"]
    aside = report.artifacts["set_aside"]
    assert aside and not {r["index"] for r in aside} & poison
    assert report.metrics["suspicious.calibration"]["set_aside"] == len(aside)
    assert "MLW-DAT-011" in {f.rule for f in report.findings}
    html = render_html(report)
    assert 'id="set-aside"' in html and "activation-clustering" in html

    train, _ = digits_split
    torch.manual_seed(0)
    clean = SmallCNN(1, 10, 8)
    fit(clean, train.x, train.y, epochs=10, seed=0)
    twin = data_report(train, model=clean, neural_cleanse_epochs=0)
    assert not twin.suspicious and "set_aside" not in twin.artifacts


def test_clusters_of_a_broad_detector_that_missed_the_poison_are_set_aside() -> None:
    """Activation clustering misses heavy poison (its small-cluster rule) but splits
    three clean classes into sub-styles, as on digits BadNets at 10%: with the poison
    confirmed by the feature trigger, those clusters are set aside, not listed."""
    y, truth, dets = _light_poison()
    ac = np.isin(y, [2, 4, 9]) & (np.arange(len(y)) % PER < 20)
    clustering = _det("activation-clustering", np.where(ac, 1.6, 0.0), ac)
    ranked = combine([dets[0], clustering], y)
    assert {r["index"] for r in ranked.suspicious} == set(np.flatnonzero(truth).tolist())
    assert {r["index"] for r in ranked.set_aside} == set(np.flatnonzero(ac).tolist())
    assert ranked.calibration["activation-clustering"]["set_aside"] == 60
