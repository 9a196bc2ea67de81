"""Whole-class targeted label flips: a class relabelled as another, found from the data.

When (nearly) every row of a source class ``s`` is relabelled as a target ``t``,
confident learning (:func:`mlwarden.poisoning.detect_data.label_issues`) cannot see
it: every out-of-fold model learns the flip, so the labels agree with the
predictions. The data still says three things, and :func:`relabelled_classes` asks
for all of them:

1. **Counts**: ``t`` holds about two classes' worth of rows and ``s`` few or none.
   Moving the suspect group back to ``s`` must bring both counts closer to the
   median class size by at least :data:`MIN_GAIN` of it (``gain``).
2. **Two groups**: 2-means on ``t``'s rows (standardised inputs reduced by PCA, the
   space confident learning and the outlier check use too) gives two groups, each at
   least :data:`MIN_SHARE` of the class. When some rows of ``s`` are left
   (:data:`MIN_SOURCE` or more), the suspect group's median must lie at most
   :data:`MAX_RATIO` times as far from ``s``'s median as from the rest of ``t``
   (it looks like ``s``, not like ``t``). With fewer left, the split must be as
   distinct as two real classes of the same data are: its separation (Fisher's ratio
   along the axis joining the two group centres) reaches the lower quartile of the
   separations of every pair of other classes merged and split the same way.
3. **Which group**: the one nearer to ``s``'s remaining rows; with no row of ``s``
   left, nothing tells the two groups apart, so both are listed (review the class).

This is the class-conditional clustering of activation clustering (Chen et al.
2018, arXiv:1811.03728) read in input space and checked against the class counts,
so it needs no model. It needs at least 3 classes (with two, "the median class" is
the pair itself).

Example::

    det = relabelled_classes(ds.x, ds.y)
    det.details["classes"]  # [{"class": 0, "source": 1, "rows": 135, ...}]
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mlwarden.poisoning.detect_data import Detection

#: Fewest rows a class needs to be split.
MIN_ROWS = 20
#: Smallest share of its class each of the two groups must hold.
MIN_SHARE = 0.15
#: How much closer to typical (in median class sizes) both counts must get.
MIN_GAIN = 0.5
#: Rows of the source class needed to judge which group looks like it.
MIN_SOURCE = 5
#: Largest (distance to the source) / (distance to the rest of its class).
MAX_RATIO = 0.5
#: Largest distance ratio when only 1-4 rows of the source are left (noisier centre).
FEW_RATIO = 0.6
#: Smallest count gain when no row of the source is left.
NONE_GAIN = 1.5
#: Largest two-sample AUC between the suspect group and the source's rows.
MAX_AUC = 0.75
#: PCA dimensions of the comparison space.
DIMS = 20

NAME = "relabelled-class"


def _space(x: np.ndarray, seed: int) -> np.ndarray:
    """Standardised, flattened inputs reduced to at most :data:`DIMS` principal axes."""
    from sklearn.decomposition import PCA

    xf = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    sd = xf.std(axis=0)
    keep = sd > 1e-12
    z = (xf[:, keep] - xf[:, keep].mean(axis=0)) / sd[keep]
    dims = min(DIMS, z.shape[1], len(z) - 1)
    if dims < 1:
        return z
    return PCA(dims, random_state=seed).fit_transform(z)


def _split(z: np.ndarray, seed: int, init: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """2-means labels of ``z`` and the split's separation: Fisher's ratio of the two
    groups projected on the line through their centres. ``init``: the two starting
    centres (group 0 grows around the first), else k-means++ with 4 restarts."""
    from sklearn.cluster import KMeans

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = (
            KMeans(2, init=init, n_init=1)
            if init is not None
            else KMeans(2, n_init=4, random_state=seed)
        ).fit(z)
    lab = km.labels_
    axis = km.cluster_centers_[0] - km.cluster_centers_[1]
    norm = float(np.linalg.norm(axis))
    if norm == 0.0 or min(np.bincount(lab, minlength=2)) < 2:
        return lab, 0.0
    p = z @ (axis / norm)
    a, b = p[lab == 0], p[lab == 1]
    return lab, float((a.mean() - b.mean()) ** 2 / max(a.var() + b.var(), 1e-12))


def _pair_quartile(
    z: np.ndarray, y: np.ndarray, big: list[int], skip: set[int], seed: int
) -> float:
    """Lower quartile of the separations of merged pairs of real classes (not ``skip``)."""
    seps = [
        _split(z[(y == i) | (y == j)], seed)[1]
        for a, i in enumerate(big)
        for j in big[a + 1 :]
        if i not in skip and j not in skip
    ]
    return float(np.quantile(seps, 0.25)) if seps else float("inf")


def _two_sample_auc(a: np.ndarray, b: np.ndarray, seed: int) -> float:
    """Cross-validated ROC AUC of a logistic regression telling ``a``'s rows from
    ``b``'s (a classifier two-sample test; Lopez-Paz and Oquab 2017, arXiv:1610.06545):
    near 0.5 when both are drawn from one distribution."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.concatenate([a, b])
    t = np.r_[np.zeros(len(a)), np.ones(len(b))]
    folds = int(min(5, len(a), len(b)))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = cross_val_predict(LogisticRegression(max_iter=500), x, t, cv=cv, method="predict_proba")
    return float(roc_auc_score(t, p[:, 1]))


def _candidate(
    z: np.ndarray, y: np.ndarray, c: int, k: int, counts: np.ndarray, med: float, seed: int
) -> dict[str, Any] | None:
    """Class ``c`` split in two, the group that would be ``k``'s rows first, with the
    statistics of the module docstring; None when the counts or shares rule it out.
    Where ``k`` has rows, the split starts from ``k``'s median and ``c``'s, so that the
    group that looks like ``k`` is the one found (an unseeded split may cut off a
    natural sub-style of ``c`` instead)."""
    idx = np.flatnonzero(y == c)
    src = np.median(z[y == k], axis=0) if counts[k] else None
    init = None if src is None else np.stack([src, np.median(z[idx], axis=0)])
    lab, sep = _split(z[idx], seed, init)
    group, rest = idx[lab == 0], idx[lab == 1]
    if src is not None:
        near = [float(np.linalg.norm(np.median(z[g], axis=0) - src)) for g in (group, rest)]
        if near[0] > near[1]:
            group, rest = rest, group
    m = len(group)
    if min(m, len(rest)) < MIN_SHARE * len(idx):
        return None
    moved = abs(counts[c] - m - med) + abs(counts[k] + m - med)
    gain = (abs(counts[c] - med) + abs(counts[k] - med) - moved) / med
    if gain < MIN_GAIN:
        return None
    cand: dict[str, Any] = {"class": c, "source": k, "gain": round(float(gain), 3)}
    cand.update(separation=round(sep, 3), counts=[int(counts[c]), int(counts[k])], median_count=med)
    if src is not None:
        apart = float(np.linalg.norm(np.median(z[group], axis=0) - np.median(z[rest], axis=0)))
        to_src = float(np.linalg.norm(np.median(z[group], axis=0) - src))
        cand["ratio"] = round(to_src / max(apart, 1e-12), 3)
        if counts[k] >= MIN_SOURCE:
            cand["auc"] = round(_two_sample_auc(z[group], z[y == k], seed), 3)
    return {**cand, "rows": group, "rest": rest}


def _few_source_rows_agree(cand: dict[str, Any], quartile: float, typical: float) -> bool:
    """The rule where under :data:`MIN_SOURCE` rows of the source are left.

    With 1-4 rows: the group must lie nearer to them than :data:`FEW_RATIO` times its
    distance to the rest of its class, and split off as distinctly as two real classes
    do (the merged pairs' lower quartile), or, where the counts say a whole class is
    missing (gain >= 1), more distinctly than a typical class's own split. With none:
    the other classes must be balanced (within 25% of the median size), the counts
    must say so plainly (gain >= :data:`NONE_GAIN`) and the split be as distinct as
    two real classes and more than a typical class's own (a class of several natural clusters next to a
    class of a few rows is common in imbalanced data; a label with no row and a class
    of twice the median size that halves cleanly is not)."""
    distinct = cand["separation"] >= quartile or (
        cand["gain"] >= 1.0 and cand["separation"] > typical
    )
    if cand["counts"][1] == 0:
        return (
            cand["balanced"]
            and cand["gain"] >= NONE_GAIN
            and cand["separation"] >= max(quartile, typical)
        )
    return cand["ratio"] <= FEW_RATIO and distinct


def relabelled_classes(
    x: np.ndarray, y: np.ndarray, *, num_classes: int | None = None, seed: int = 0
) -> Detection:
    """Find classes that hold another class's rows under their label (see module doc).

    ``x``: inputs of any shape ``(N, ...)`` (flattened); ``y``: integer labels ``(N,)``;
    ``num_classes``: the number of classes when some have no row left (a model's
    outputs), else ``max(y) + 1``. Flagged rows score the group's count gain (in
    median class sizes); ``details["classes"]`` names each relabelled class, its
    suspected source and the statistics that decided it.
    """
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    k = max(int(y.max()) + 1 if n else 0, int(num_classes or 0))
    counts = np.bincount(y, minlength=k)
    scores = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    det = Detection(NAME, scores, flagged, {}, {"classes": []})
    if k < 3 or (counts > 0).sum() < 2 or n < 3 * MIN_ROWS:
        det.details["skipped"] = "needs at least 3 classes and 60 rows"
        return det
    med = float(np.median(counts[counts > 0]))
    z = _space(x, seed)
    big = [int(c) for c in np.flatnonzero(counts >= MIN_ROWS)]
    quartile: float | None = None
    typical = 0.0
    for c in big:
        # moving m rows from c to k gains at most 2 * min(c - med, med - k) / med
        pairs = [
            kk
            for kk in range(k)
            if kk != c and 2 * min(counts[c] - med, med - counts[kk]) >= MIN_GAIN * med
        ]
        cands = [_candidate(z, y, c, kk, counts, med, seed) for kk in pairs]
        for cand in sorted((a for a in cands if a), key=lambda a: -a["gain"]):
            if counts[cand["source"]] >= MIN_SOURCE:
                if cand["ratio"] > MAX_RATIO or cand["auc"] > MAX_AUC:
                    continue
            else:
                if quartile is None:
                    quartile = _pair_quartile(z, y, big, {c}, seed)
                    typical = float(np.median([_split(z[y == b], seed)[1] for b in big]))
                others = np.delete(counts, [c, cand["source"]])
                cand.update(
                    pair_quartile=round(quartile, 3),
                    class_median=round(typical, 3),
                    balanced=bool(np.all(np.abs(others - med) <= 0.25 * med)),
                )
                if not _few_source_rows_agree(cand, quartile, typical):
                    continue
            rows = cand.pop("rows")
            rest = cand.pop("rest")
            if counts[cand["source"]] == 0:
                rows = np.concatenate([rows, rest])  # nothing tells the two groups apart
            _flag(det, rows, cand)
            break
    return det


def _flag(det: Detection, rows: np.ndarray, cand: dict[str, Any]) -> None:
    c, s = cand["class"], cand["source"]
    det.flagged[rows] = True
    det.scores[rows] = cand["gain"]
    have = cand["counts"][1]
    why = f"relabelled class: labelled {c}, but in a group of {len(rows)} rows of class {c} " + (
        f"that look like class {s} ({have} rows left)"
        if have
        else f"(class {s} has no row; either half of class {c} may be it)"
    )
    for i in rows:
        det.reasons[int(i)] = why
    det.details["classes"].append({**cand, "rows": len(rows)})
