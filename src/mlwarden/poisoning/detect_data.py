"""Find suspicious samples in a training set.

Detectors (each returns a :class:`Detection`: a score per sample, higher is more
suspicious, the flagged samples and a reason for each):

* :func:`activation_clustering` — Chen et al. 2018, "Detecting Backdoor Attacks on
  Deep Neural Networks by Activation Clustering", arXiv:1811.03728. Per class, the
  penultimate activations are reduced to 10 dimensions with ICA and split by 2-means;
  a small, well separated cluster is flagged.
* :func:`spectral_signatures` — Tran et al. 2018, "Spectral Signatures in Backdoor
  Attacks", arXiv:1811.00636. Per class, the score is the squared projection of the
  centred representation on its top singular vector; the top ``1.5 * eps`` fraction
  of each class is removed.
* :func:`label_issues` — confident learning (Northcutt et al. 2021, "Confident
  Learning: Estimating Uncertainty in Dataset Labels", arXiv:1911.00068) on
  out-of-sample probabilities from ``cross_val_predict``, with per-class thresholds
  and prune-by-noise-rate.
* :func:`duplicates` — exact duplicates (hash of the values) and near-duplicates
  (nearest neighbour closer than a fraction of the typical neighbour distance), with
  conflicting labels called out.
* :func:`outliers` — isolation forest (Liu et al. 2008) agreeing with a robust
  k-nearest-neighbour distance score.

:func:`rank` merges detections into one ranked list of ``{"index", "score",
"reasons"}``; :func:`flag_metrics` gives precision, recall, FPR and F1 against known
poison indices.

Example::

    acts = penultimate(model, ds.x)
    ac = activation_clustering(acts, ds.y)
    suspicious = rank([ac, label_issues(ds.x, ds.y)])
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError


@dataclass
class Detection:
    """One detector's verdict on every sample of a dataset."""

    name: str
    scores: np.ndarray  #: (N,) float, higher = more suspicious; 0 when not examined
    flagged: np.ndarray  #: (N,) bool
    reasons: dict[int, str] = field(default_factory=dict)  #: flagged index -> why
    details: dict[str, Any] = field(default_factory=dict)  #: per-class statistics

    @property
    def indices(self) -> np.ndarray:
        return np.flatnonzero(self.flagged)


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1)


def _check(acts: np.ndarray, y: np.ndarray) -> None:
    if len(acts) != len(y):
        raise UserError(f"{len(acts)} activation rows but {len(y)} labels")
    if len(y) < 10:
        raise UserError(f"need at least 10 samples to look for poisoning; got {len(y)}")


def activation_clustering(
    acts: np.ndarray,
    y: np.ndarray,
    *,
    n_components: int = 10,
    reduce: str = "ica",
    max_relative_size: float = 0.35,
    min_silhouette: float = 0.15,
    min_class_size: int = 20,
    seed: int = 0,
) -> Detection:
    """Activation clustering (Chen et al. 2018, arXiv:1811.03728).

    ``acts``: penultimate activations ``(N, D)``; ``y``: labels. Per class with at least
    ``min_class_size`` samples the activations are reduced to ``n_components``
    dimensions (``reduce="ica"`` as in the paper, or ``"pca"``) and split by 2-means.
    The smaller cluster is flagged when it holds at most ``max_relative_size`` of the
    class (the paper's relative-size criterion) and the split is clear: mean
    silhouette at least ``min_silhouette``. Scores: 1 + the member's silhouette value
    for flagged samples, else 0.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA, FastICA
    from sklearn.metrics import silhouette_samples

    _check(acts, y)
    if reduce not in ("ica", "pca"):
        raise UserError(f"reduce must be 'ica' or 'pca'; got {reduce!r}")
    acts = _flat(acts).astype(np.float64)
    n = len(y)
    scores = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    details: dict[str, Any] = {}
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < min_class_size:
            continue
        a = acts[idx]
        a = a[:, a.std(axis=0) > 1e-8]
        k = min(n_components, a.shape[1], len(idx) - 1)
        if k < 1:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if reduce == "ica":
                r = FastICA(
                    k, random_state=seed, max_iter=200, whiten="unit-variance"
                ).fit_transform(a)
            else:
                r = PCA(k, random_state=seed).fit_transform(a)
            labels = KMeans(2, n_init=10, random_state=seed).fit_predict(r)
        sizes = np.bincount(labels, minlength=2)
        if sizes.min() == 0:
            continue
        sil = silhouette_samples(r, labels)
        class_sil = float(sil.mean())
        small = int(np.argmin(sizes))
        rel = float(sizes[small] / len(idx))
        poison = rel <= max_relative_size and class_sil >= min_silhouette
        details[str(int(c))] = {
            "relative_size": round(rel, 3),
            "silhouette": round(class_sil, 3),
            "flagged": poison,
        }
        if poison:
            members = idx[labels == small]
            flagged[members] = True
            scores[members] = 1.0 + np.clip(sil[labels == small], -1.0, 1.0)
            why = (
                f"activation clustering: in class {c}, a separate cluster holding "
                f"{rel:.0%} of the class (silhouette {class_sil:.2f})"
            )
            for i in members:
                reasons[int(i)] = why
    return Detection("activation-clustering", scores, flagged, reasons, details)


def spectral_signatures(
    acts: np.ndarray,
    y: np.ndarray,
    *,
    eps: float = 0.05,
    factor: float = 1.5,
    min_class_size: int = 10,
) -> Detection:
    """Spectral signatures (Tran et al. 2018, arXiv:1811.00636).

    Per class: centre the representations, take the top right singular vector ``v``,
    score each sample by ``((r - mean) . v) ** 2`` and flag the ``factor * eps``
    highest-scoring fraction of the class (the paper removes 1.5 times an upper bound
    ``eps`` on the poisoned fraction). Scores are divided by the class median score
    so that they compare across classes.
    """
    _check(acts, y)
    if not 0.0 < eps < 1.0:
        raise UserError(f"eps (upper bound on the poisoned fraction) must be in (0, 1); got {eps}")
    acts = _flat(acts).astype(np.float64)
    n = len(y)
    scores = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < min_class_size:
            continue
        r = acts[idx] - acts[idx].mean(axis=0)
        _, _, vt = np.linalg.svd(r, full_matrices=False)
        s = (r @ vt[0]) ** 2
        s = s / max(float(np.median(s)), 1e-12)
        scores[idx] = s
        k = int(factor * eps * len(idx))
        top = idx[np.argsort(-s)[:k]]
        flagged[top] = True
        for i in top:
            reasons[int(i)] = (
                f"spectral signature: among the top {factor * eps:.0%} of class {c} "
                f"along its top singular direction (score {scores[i]:.1f}x the class median)"
            )
    return Detection("spectral-signatures", scores, flagged, reasons)


def out_of_sample_probabilities(
    x: np.ndarray, y: np.ndarray, estimator: Any = None, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-sample class probabilities ``(N, K)`` by ``cross_val_predict``.

    Default estimator: a standardised multinomial logistic regression on the
    flattened inputs.
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xf = _flat(x)
    counts = np.bincount(y)
    present = counts[counts > 0]
    if len(present) < 2:
        only = ", ".join(str(c) for c in np.flatnonzero(counts)) or "none"
        raise UserError(f"confident learning needs at least 2 classes; the labels hold only {only}")
    folds = int(min(folds, present.min()))
    if folds < 2:
        raise UserError("confident learning needs at least 2 samples of every class")
    est = (
        clone(estimator)
        if estimator is not None
        else make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.1))
    )
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proba = cross_val_predict(est, xf, y, cv=cv, method="predict_proba")
    k = int(y.max()) + 1
    if proba.shape[1] != k:  # classes absent from y get zero probability
        full = np.zeros((len(y), k))
        full[:, np.flatnonzero(counts > 0)] = proba
        proba = full
    return proba


def label_issues(
    x: np.ndarray,
    y: np.ndarray,
    *,
    probs: np.ndarray | None = None,
    estimator: Any = None,
    folds: int = 5,
    seed: int = 0,
) -> Detection:
    """Confident learning (Northcutt et al. 2021, arXiv:1911.00068).

    Per-class threshold ``t_j`` = mean out-of-sample probability of class ``j`` over
    the samples labelled ``j``. A sample labelled ``i`` is counted in the confident
    joint at ``(i, j)`` where ``j`` is its most likely class among those whose
    probability reaches ``t_j``. The joint is calibrated to the label counts, and for
    each off-diagonal cell ``(i, j)`` the ``C[i, j]`` samples labelled ``i`` with the
    largest margin ``p_j - p_i`` are flagged (prune by noise rate). Score: ``1 -
    p(given label)``.
    """
    if probs is None:
        probs = out_of_sample_probabilities(x, y, estimator=estimator, folds=folds, seed=seed)
    n, k = probs.shape
    if len(y) != n:
        raise UserError(f"{n} probability rows but {len(y)} labels")
    counts = np.bincount(y, minlength=k)
    thresholds = np.array(
        [probs[y == j, j].mean() if counts[j] else 1.0 for j in range(k)], dtype=np.float64
    )
    above = probs >= thresholds[None, :] - 1e-12
    masked = np.where(above, probs, -1.0)
    best = masked.argmax(axis=1)
    confident = above.any(axis=1)
    joint = np.zeros((k, k))
    np.add.at(joint, (y[confident], best[confident]), 1)
    row = joint.sum(axis=1, keepdims=True)
    calibrated = np.where(row > 0, joint / np.maximum(row, 1) * counts[:, None], 0.0)
    flagged = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    self_conf = probs[np.arange(n), y]
    for i in range(k):
        rows = np.flatnonzero(y == i)
        for j in range(k):
            if i == j:
                continue
            m = int(round(calibrated[i, j]))
            if m <= 0:
                continue
            margin = probs[rows, j] - probs[rows, i]
            pick = rows[np.argsort(-margin)[:m]]
            pick = pick[probs[pick, j] > probs[pick, i]]
            for p in pick:
                if not flagged[p]:
                    flagged[p] = True
                    reasons[int(p)] = (
                        f"label issue: labelled {i} but out-of-sample prediction says {j} "
                        f"(p={probs[p, j]:.2f} vs {probs[p, i]:.2f})"
                    )
    return Detection(
        "label-issues",
        1.0 - self_conf,
        flagged,
        reasons,
        {"thresholds": thresholds.round(3).tolist(), "noise_estimate": float(flagged.mean())},
    )


def duplicates(x: np.ndarray, y: np.ndarray, *, near: float = 0.05, decimals: int = 6) -> Detection:
    """Exact duplicates (SHA-256 of the rounded values) and near-duplicates.

    A near-duplicate's nearest neighbour lies closer than ``near`` times the median
    nearest-neighbour distance of the dataset (Euclidean, flattened inputs). The first
    sample of a group is kept unflagged; copies are flagged. Score: 2 for an exact copy
    with a different label, 1.5 for an exact copy, 1 for a near copy with a different
    label, 0.5 for a near copy.
    """
    from sklearn.neighbors import NearestNeighbors

    xf = _flat(x)
    n = len(xf)
    scores = np.zeros(n)
    reasons: dict[int, str] = {}
    first: dict[str, int] = {}
    exact = 0
    conflicts = 0
    for i in range(n):
        h = hashlib.sha256(np.round(xf[i], decimals).tobytes()).hexdigest()
        if h in first:
            j = first[h]
            exact += 1
            if y[i] != y[j]:
                conflicts += 1
                scores[i] = 2.0
                reasons[i] = f"exact duplicate of #{j} with a different label ({y[i]} vs {y[j]})"
            else:
                scores[i] = 1.5
                reasons[i] = f"exact duplicate of #{j}"
        else:
            first[h] = i
    near_count = 0
    if n >= 3:
        uniq = np.array(sorted(first.values()))
        nn = NearestNeighbors(n_neighbors=2).fit(xf[uniq])
        dist, nbr = nn.kneighbors(xf[uniq])
        typical = float(np.median(dist[:, 1]))
        limit = near * typical
        for pos, i in enumerate(uniq):
            j = int(uniq[nbr[pos, 1]])
            if typical > 0 and dist[pos, 1] < limit and j < i:
                near_count += 1
                if y[i] != y[j]:
                    conflicts += 1
                    scores[i] = 1.0
                    reasons[int(i)] = (
                        f"near-duplicate of #{j} with a different label ({y[i]} vs {y[j]})"
                    )
                else:
                    scores[i] = 0.5
                    reasons[int(i)] = f"near-duplicate of #{j}"
    return Detection(
        "duplicates",
        scores,
        scores > 0,
        reasons,
        {"exact": exact, "near": near_count, "label_conflicts": conflicts},
    )


def outliers(
    x: np.ndarray, *, k: int = 10, z: float = 3.5, max_dims: int = 50, seed: int = 0
) -> Detection:
    """Samples far from the rest: isolation forest and kNN distance must agree.

    Inputs are reduced to at most ``max_dims`` principal components. The kNN score is
    the mean distance to the ``k`` nearest neighbours as a robust z-score (median and
    1.4826 * MAD); a sample is flagged when that z exceeds ``z`` and the isolation
    forest (scikit-learn, ``contamination="auto"``) also calls it an outlier.
    """
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import NearestNeighbors

    xf = _flat(x).astype(np.float64)
    n = len(xf)
    if n < k + 2:
        return Detection("outliers", np.zeros(n), np.zeros(n, dtype=bool))
    dims = min(max_dims, n)
    if xf.shape[1] > dims:
        xf = PCA(dims, random_state=seed).fit_transform(xf)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(xf).kneighbors(xf)
    d = dist[:, 1:].mean(axis=1)
    med = float(np.median(d))
    mad = float(np.median(np.abs(d - med))) * 1.4826
    zs = (d - med) / max(mad, 1e-12)
    iso = IsolationForest(random_state=seed, contamination="auto").fit(xf)
    iso_out = iso.predict(xf) == -1
    flagged = (zs > z) & iso_out
    reasons = {
        int(i): f"outlier: {zs[i]:.1f} robust standard deviations from its neighbours"
        for i in np.flatnonzero(flagged)
    }
    return Detection("outliers", np.maximum(zs, 0.0), flagged, reasons, {"knn_k": k, "z": z})


def rank(detections: list[Detection], limit: int | None = None) -> list[dict[str, Any]]:
    """Merge detections into ``[{"index", "score", "reasons"}]``, most suspicious first.

    The score of a flagged sample is the sum, over the detectors that flagged it, of
    its percentile rank within that detector's scores (so each detector contributes at
    most 1 and agreeing detectors add up).
    """
    if not detections:
        return []
    n = len(detections[0].scores)
    total = np.zeros(n)
    why: dict[int, list[str]] = {}
    for det in detections:
        if len(det.scores) != n:
            raise UserError("detections cover different numbers of samples")
        order = np.argsort(np.argsort(det.scores, kind="stable"), kind="stable")
        pct = (order + 1) / n
        for i in det.indices:
            total[i] += pct[i]
            why.setdefault(int(i), []).append(det.reasons.get(int(i), det.name))
    idx = sorted(why, key=lambda i: (-total[i], i))
    if limit is not None:
        idx = idx[:limit]
    return [{"index": int(i), "score": round(float(total[i]), 4), "reasons": why[i]} for i in idx]


def flag_metrics(flagged: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """TPR (recall), FPR, precision and F1 of a flagged set against true poison.

    Both arguments are boolean masks over the samples (or index arrays with
    ``truth`` a mask).
    """
    truth = np.asarray(truth)
    if truth.dtype != bool:
        raise UserError("truth must be a boolean mask over the samples")
    f = np.asarray(flagged)
    if f.dtype != bool:
        mask = np.zeros(len(truth), dtype=bool)
        mask[f.astype(int)] = True
        f = mask
    tp = int(np.sum(f & truth))
    fp = int(np.sum(f & ~truth))
    fn = int(np.sum(~f & truth))
    tn = int(np.sum(~f & ~truth))
    tpr = tp / (tp + fn) if tp + fn else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * tpr / (precision + tpr) if precision + tpr else 0.0
    return {
        "tpr": round(tpr, 4),
        "fpr": round(fpr, 4),
        "precision": round(precision, 4),
        "f1": round(f1, 4),
        "flagged": int(f.sum()),
        "true_poison": int(truth.sum()),
    }
