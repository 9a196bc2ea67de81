"""The calibrated, combined ``suspicious`` list (issue 18): conformal p-values per
detector, weighted Bonferroni, data-quality rows kept apart."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.core.data import Dataset
from mlwarden.core.errors import UserError
from mlwarden.poisoning.detect_data import Detection
from mlwarden.poisoning.ranking import combine, conformal_p

K, PER = 5, 100
TARGET = 3


def _labels() -> np.ndarray:
    return np.repeat(np.arange(K), PER)


def _det(name: str, scores: np.ndarray, flagged: np.ndarray) -> Detection:
    reasons = {int(i): f"{name}: flagged" for i in np.flatnonzero(flagged)}
    return Detection(name, scores, flagged, reasons)


def _heavy(share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, Detection]:
    """A detector whose scores separate poison (``share`` of the target class) from
    clean rows, with noise; it flags the target class's rows above a cut-off."""
    rng = np.random.default_rng(seed)
    y = _labels()
    truth = np.zeros(len(y), dtype=bool)
    members = np.flatnonzero(y == TARGET)
    truth[members[: int(share * PER)]] = True
    scores = rng.normal(0.0, 1.0, len(y)) + 8.0 * truth
    flagged = (y == TARGET) & (scores > 1.0)
    return y, truth, _det("spectre", scores, flagged)


@pytest.mark.parametrize("share", [0.05, 0.45, 0.6])
def test_poison_at_any_share_of_the_class_keeps_small_p_values(share: float) -> None:
    """The null is the classes the detector did not flag, so a class poisoned past half
    its rows does not calibrate its own poison away (a per-class median would)."""
    y, truth, det = _heavy(share)
    p, size = conformal_p(det, y)
    assert size == (K - 1) * PER
    assert np.all(p[truth] <= 2.0 / (size + 1))
    ranked = combine([det], y)
    listed = {r["index"] for r in ranked.suspicious}
    poison = set(np.flatnonzero(truth).tolist())
    assert poison <= listed
    # Benjamini-Hochberg at 0.05: a few clean rows from the null's own tail at most
    assert len(listed - poison) <= 0.1 * len(listed)
    # most clean rows the detector flagged at the edge fall short and are dropped
    assert ranked.dropped == int(det.flagged.sum()) - len(listed)


def test_hygiene_rows_are_listed_apart_and_do_not_dilute_the_poison_list() -> None:
    y, truth, det = _heavy(0.3)
    rng = np.random.default_rng(1)
    noisy = np.zeros(len(y), dtype=bool)
    noisy[rng.choice(np.flatnonzero(~truth), 30, replace=False)] = True
    labels = _det("label-issues", noisy * 0.9, noisy)
    outl = _det("outliers", noisy * 5.0, noisy)
    ranked = combine([labels, det, outl], y)
    listed = {r["index"] for r in ranked.suspicious}
    poison = set(np.flatnonzero(truth).tolist())
    assert poison <= listed and len(listed - poison) <= 0.1 * len(listed)
    assert not listed & set(np.flatnonzero(noisy).tolist())
    assert set(ranked.issues) == {"label_issues", "outliers"}
    assert {r["index"] for r in ranked.issues["label_issues"]} == set(
        np.flatnonzero(noisy).tolist()
    )
    assert ranked.issues["outliers"][0]["reasons"] == ["outliers: flagged"]


def test_agreeing_detectors_rank_first_and_every_row_names_its_evidence() -> None:
    y, truth, det = _heavy(0.3)
    second = np.zeros(len(y), dtype=bool)
    agree = np.flatnonzero(truth)[:5]
    second[agree] = True
    other = _det("trigger-occlusion", second.astype(float), second)
    ranked = combine([det, other], y)
    rows = ranked.suspicious
    assert [r["index"] for r in rows[:5]] == sorted(agree.tolist())
    for r in rows:
        assert 0.0 <= r["score"] <= 1.0 and r["p_value"] == pytest.approx(1 - r["score"], abs=1e-3)
        assert set(r["detectors"]) <= {"spectre", "trigger-occlusion"} and r["detectors"]
        assert len(r["reasons"]) == len(r["detectors"])
    assert set(rows[0]["detectors"]) == {"spectre", "trigger-occlusion"}
    occl = ranked.calibration["trigger-occlusion"]
    assert (occl["flagged"], occl["listed"]) == (5, 5)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_a_weak_flag_is_dropped_and_weights_shift_trust() -> None:
    """A detector that flags rows scoring like the null lists nothing; raising its
    weight against a strong detector only lowers the strong one's share of alpha."""
    y = _labels()
    rng = np.random.default_rng(2)
    scores = rng.normal(0.0, 1.0, len(y))
    weak = (y == TARGET) & (scores > 0.5)  # the usual upper tail of any class
    ranked = combine([_det("strip", scores, weak)], y)
    assert ranked.suspicious == [] and ranked.dropped == int(weak.sum())
    _, truth, strong = _heavy(0.2)
    both = combine([_det("strip", scores, weak), strong], y, weights={"strip": 9.0})
    assert both.calibration["strip"]["weight"] == pytest.approx(0.9)
    assert both.calibration["spectre"]["weight"] == pytest.approx(0.1)
    with pytest.raises(UserError, match="weights must be positive"):
        combine([strong], y, weights={"spectre": 0.0})


def test_mismatched_detections_are_refused() -> None:
    y = _labels()
    bad = _det("strip", np.zeros(3), np.zeros(3, dtype=bool))
    with pytest.raises(UserError, match="covers 3 rows"):
        combine([bad], y)


def test_data_report_lists_label_issues_apart_from_the_feature_trigger() -> None:
    """Through the audit: a planted feature trigger plus flipped labels; the trigger rows
    are the whole ``suspicious`` list, the flips are in ``data_issues``."""
    from sklearn.datasets import make_blobs

    from mlwarden.poisoning.assess import data_report

    x, y = make_blobs(n_samples=600, centers=4, n_features=10, random_state=4)
    x = np.round((x - x.min(0)) / (x.max(0) - x.min(0)), 3).astype(np.float32)
    rng = np.random.default_rng(4)
    poison = rng.choice(np.flatnonzero(y != 0), 60, replace=False)
    x[np.ix_(poison, [2, 7])] = 1.5
    y[poison] = 0
    flips = rng.choice(np.setdiff1d(np.arange(600), poison), 15, replace=False)
    y[flips] = (y[flips] + 1) % 4
    report = data_report(Dataset(x=x, y=y.astype(np.int64), name="t"))
    listed = {r["index"] for r in report.suspicious or []}
    assert listed == set(poison.tolist())
    issues = report.artifacts["data_issues"]
    assert len({r["index"] for r in issues["label_issues"]} & set(flips.tolist())) >= 10
    assert report.metrics["suspicious.calibration"]["detectors"]["feature-trigger"]["null_rows"] > 0
    # the HTML report shows the data-quality rows in their own table
    from mlwarden.report.html import render_html

    html = render_html(report)
    assert 'id="data-issues"' in html and "<td>label issues</td>" in html
