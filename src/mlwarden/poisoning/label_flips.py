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
3. **Which group**: the one nearer to ``s``'s remaining rows.

With **no row of** ``s`` **left** (a label the data's class list or the model's output
layer has, with no row), nothing in the data tells the genuine half of ``t`` from the
relabelled one: a model trained on the data learns both as ``t``, and the two halves
of two real classes are symmetric. The counts alone decide that a class is two
classes' worth (the other classes balanced within 25% of the median, ``t`` at least
1.75 median classes, so a count gain of :data:`NONE_GAIN`), and the rows are named by
**evidence from outside the data** when there is some: a model trained elsewhere
(``predict``) or trusted reference rows (``reference``, e.g. a held-out set or the
previous release of the data, read by a logistic regression) that put between
:data:`MIN_SPLIT` and ``1 - MIN_SPLIT`` of ``t``'s rows in ``s``. Without it the whole
class is listed, marked ``ambiguous`` and ranked below every decided row:
review the class, do not drop it. Look-alike classes (MNIST 4/9, 3/5) split no more
distinctly than one real class does, so the split is reported (``split_distinct``) but
does not decide.

This is the class-conditional clustering of activation clustering (Chen et al.
2018, arXiv:1811.03728) read in input space and checked against the class counts,
so it needs no model. It needs at least 3 classes (with two, "the median class" is
the pair itself).

Example::

    det = relabelled_classes(ds.x, ds.y)
    det.details["classes"]  # [{"class": 0, "source": 1, "rows": 135, ...}]
    # no row of the source left: trusted rows (or a model trained on them) say which half
    det = relabelled_classes(ds.x, ds.y, num_classes=10, reference=(ref.x, ref.y))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
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
#: Smallest (and ``1 -`` largest) share of a class outside evidence may put in the
#: empty source label for its rows to be named (else the evidence is not about a flip).
MIN_SPLIT = 0.2
#: Score of rows listed while nothing tells which half is relabelled: below every
#: decided row (those score their gain, at least :data:`MIN_GAIN`).
AMBIGUOUS_SCORE = MIN_GAIN / 2
#: PCA dimensions of the comparison space.
DIMS = 20

NAME = "relabelled-class"


def _space(
    x: np.ndarray, seed: int, extra: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Standardised, flattened inputs reduced to at most :data:`DIMS` principal axes,
    and ``extra`` rows (same shape) mapped by the same standardisation and axes."""
    from sklearn.decomposition import PCA

    xf = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    mu, sd = xf.mean(axis=0), xf.std(axis=0)
    keep = sd > 1e-12

    def scale(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
        return (a[:, keep] - mu[keep]) / sd[keep]

    z = scale(xf)
    ze = None if extra is None else scale(extra)
    dims = min(DIMS, z.shape[1], len(z) - 1)
    if dims < 1:
        return z, ze
    pca = PCA(dims, random_state=seed).fit(z)
    return pca.transform(z), None if ze is None else pca.transform(ze)


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
    """The rule where 1-4 rows of the source are left: the group must lie nearer to them
    than :data:`FEW_RATIO` times its distance to the rest of its class, and split off as
    distinctly as two real classes do (the merged pairs' lower quartile), or, where the
    counts say a whole class is missing (gain >= 1), more distinctly than a typical
    class's own split (a class of several natural clusters next to a class of a few
    rows is common in imbalanced data)."""
    distinct = cand["separation"] >= quartile or (
        cand["gain"] >= 1.0 and cand["separation"] > typical
    )
    return cand["ratio"] <= FEW_RATIO and distinct


def _reference_predict(
    z: np.ndarray, zref: np.ndarray, yref: np.ndarray, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    """A logistic regression fitted on the trusted reference rows (in the audit's PCA
    space): the outside evidence that names the relabelled rows of a class."""
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(max_iter=1000, random_state=seed).fit(zref, yref)
    return lambda idx: np.asarray(lr.predict(z[idx]))


def _no_source(
    z: np.ndarray,
    y: np.ndarray,
    c: int,
    counts: np.ndarray,
    med: float,
    evidence: list[tuple[str, Callable[[np.ndarray], np.ndarray]]],
    seed: int,
) -> tuple[dict[str, Any], np.ndarray] | None:
    """Class ``c`` as two classes' worth while some label has no row (module doc): the
    candidate and its rows, or None when the counts do not say so. ``evidence``:
    (name, predict rows -> labels) from outside the data, tried in order."""
    empty = [int(e) for e in np.flatnonzero(counts == 0)]
    others = np.delete(counts, empty + [c])
    gain = (counts[c] - abs(counts[c] - 2 * med)) / med  # moving counts[c] - med rows
    if not empty or gain < NONE_GAIN or np.any(np.abs(others - med) > 0.25 * med):
        return None
    idx = np.flatnonzero(y == c)
    lab, sep = _split(z[idx], seed)
    rest = [b for b in np.flatnonzero(counts >= MIN_ROWS) if b != c]
    typical = float(np.median([_split(z[y == b], seed)[1] for b in rest])) if rest else 0.0
    cand: dict[str, Any] = {"class": c, "source": empty[0], "gain": round(float(gain), 3)}
    cand.update(separation=round(sep, 3), counts=[int(counts[c]), 0], median_count=med)
    cand.update(class_median=round(typical, 3), split_distinct=bool(sep > 2 * typical))
    if len(empty) > 1:
        cand["empty_labels"] = empty
    for name, predict in evidence:
        pred = predict(idx)
        share = {e: float(np.mean(pred == e)) for e in empty}
        s = max(share, key=lambda e: share[e])
        if MIN_SPLIT <= share[s] <= 1 - MIN_SPLIT:
            cand.update(source=s, evidence=name, share_predicted=round(share[s], 3))
            return cand, idx[pred == s]
    cand.update(ambiguous=True, evidence="counts")
    return cand, idx


def relabelled_classes(
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int | None = None,
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> Detection:
    """Find classes that hold another class's rows under their label (see module doc).

    ``x``: inputs of any shape ``(N, ...)`` (flattened); ``y``: integer labels ``(N,)``;
    ``num_classes``: the number of classes when some have no row left (a model's
    outputs, the data's class list), else ``max(y) + 1``. Where a label has no row
    left, outside evidence names the relabelled rows: ``predict`` (row indices ->
    labels, e.g. a model trained elsewhere) and ``reference`` (trusted ``(x, y)`` rows
    of the same inputs); without it the class is listed whole as ``ambiguous``.
    Flagged rows score the group's count gain (in median class sizes; ambiguous rows
    :data:`AMBIGUOUS_SCORE`, below every decided row); ``details["classes"]`` names each relabelled class, its suspected
    source and the statistics that decided it.
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
    z, zref = _space(x, seed, None if reference is None else reference[0])
    evidence = []
    if reference is not None and zref is not None and len(np.unique(reference[1])) >= 2:
        evidence.append(("reference", _reference_predict(z, zref, np.asarray(reference[1]), seed)))
    if predict is not None:
        evidence.append(("model", predict))
    big = [int(c) for c in np.flatnonzero(counts >= MIN_ROWS)]
    quartile: float | None = None
    typical = 0.0
    restored = counts.copy()
    pending: list[int] = []
    for c in big:
        # moving m rows from c to k gains at most 2 * min(c - med, med - k) / med
        pairs = [
            kk
            for kk in range(k)
            if kk != c
            and counts[kk] > 0
            and 2 * min(counts[c] - med, med - counts[kk]) >= MIN_GAIN * med
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
                cand.update(pair_quartile=round(quartile, 3), class_median=round(typical, 3))
                if not _few_source_rows_agree(cand, quartile, typical):
                    continue
            cand.pop("rest")
            rows = cand.pop("rows")
            _flag(det, rows, cand)
            restored[c] -= len(rows)
            restored[cand["source"]] += len(rows)
            break
        else:
            pending.append(c)
    # no source row left: judged on the counts with the flips found above undone, so
    # that a second, partial flip does not hide the whole-class one
    for c in pending:
        found = _no_source(z, y, c, restored, med, evidence, seed)
        if found is not None:
            _flag(det, found[1], found[0])
    return det


def _flag(det: Detection, rows: np.ndarray, cand: dict[str, Any]) -> None:
    c, s = cand["class"], cand["source"]
    det.flagged[rows] = True
    det.scores[rows] = AMBIGUOUS_SCORE if cand.get("ambiguous") else cand["gain"]
    have = cand["counts"][1]
    why = f"relabelled class: labelled {c}, but in a group of {len(rows)} rows of class {c} " + (
        f"that look like class {s} ({have} rows left)"
        if have
        else f"that the {cand['evidence']} puts in class {s}, which has no row"
        if not cand.get("ambiguous")
        else f"(class {s} has no row; either half of class {c} may be it: review the class)"
    )
    for i in rows:
        det.reasons[int(i)] = why
    det.details["classes"].append({**cand, "rows": len(rows)})
