"""Data-only trigger detector: feature values that alone predict one label.

A backdoor planted in a table (or in any flat input) sets a few features to fixed
values and relabels the rows to the target class. Without any model that leaves three
marks in the data, which :func:`feature_triggers` tests one after another:

1. **Mass.** A value of a feature repeats exactly in many rows (at least
   ``min_count``), far more often than continuous data repeats a value.
2. **Association.** Those rows carry one label far beyond its base rate: a one-sided
   binomial test against the label's share of the whole data, Bonferroni-corrected over
   every (feature, value) pair tested, and a purity of at least ``min_purity``.
   Pairs of one class that fire on the same rows form one trigger (a value
   combination), so a trigger spread over several features is found as one.
3. **Nothing else explains the label.** A naturally predictive value (a pixel that is
   white only in zeros, a category that is mostly fraud) is backed by the rest of the
   row; a planted one is not. A classifier trained out of fold *without the trigger
   features* predicts the trigger rows' labels; when most of them are predicted as
   some other class (their source class), far more often than the class's other
   rows, the value set is confirmed as a trigger. This is exclusionary
   reclassification (Chen et al. 2018, "Detecting Backdoor Attacks on Deep Neural
   Networks by Activation Clustering", arXiv:1811.03728, Sec. V) applied to features
   instead of activation clusters.

Flagged: the rows labelled with the target that carry at least half of the trigger's
values. Works for any input shape (inputs are flattened) and needs no model, so it
also covers models without gradients and poison rates far above half of the target
class, where clustering detectors fail.

Example::

    det = feature_triggers(ds.x, ds.y)
    det.details["triggers"]   # [{"target": 6, "features": [44, 45], "values": {...}, ...}]
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mlwarden.poisoning.detect_data import Detection, _flat

#: Features scanned at most (the most repetitive ones first): bounds the cost on wide inputs.
MAX_FEATURES = 4096


def _candidates(
    xf: np.ndarray, y: np.ndarray, min_count: int, min_purity: float, alpha: float
) -> list[dict[str, Any]]:
    """(feature, value) pairs with mass and a significant label association."""
    from scipy.stats import binom

    n = len(y)
    k = int(y.max()) + 1
    base = np.bincount(y, minlength=k) / n
    found: list[tuple[int, float, int, int, int]] = []
    tested = 0
    for j in range(xf.shape[1]):
        values, inverse, counts = np.unique(xf[:, j], return_inverse=True, return_counts=True)
        heavy = np.flatnonzero((counts >= min_count) & (counts <= 0.6 * n))
        if len(heavy) == 0:
            continue
        table = np.bincount(inverse.reshape(-1) * k + y, minlength=len(values) * k)
        table = table.reshape(len(values), k)
        tested += len(heavy)
        for u in heavy:
            c = int(table[u].argmax())
            found.append((j, float(values[u]), c, int(table[u, c]), int(counts[u])))
    out: list[dict[str, Any]] = []
    for j, value, c, hit, total in found:
        if hit / total < min_purity or hit / total <= base[c]:
            continue
        pval = float(binom.sf(hit - 1, total, base[c]))
        if pval * max(tested, 1) < alpha:
            out.append({"feature": j, "value": value, "target": c, "rows": total, "p": pval})
    # a column whose values name several classes over most rows encodes the label
    # (leakage, reported by the label checks): a trigger points at one class only
    classes: dict[int, set[int]] = {}
    covered: dict[int, int] = {}
    for pair in out:
        classes.setdefault(pair["feature"], set()).add(pair["target"])
        covered[pair["feature"]] = covered.get(pair["feature"], 0) + pair["rows"]
    label_like = {j for j in classes if len(classes[j]) >= 2 and covered[j] >= n / 2}
    return [pair for pair in out if pair["feature"] not in label_like]


def _group(
    xf: np.ndarray, y: np.ndarray, pairs: list[dict[str, Any]]
) -> list[tuple[int, list[dict[str, Any]]]]:
    """Pairs of one class that fire on mostly the same rows form one trigger."""
    groups: list[tuple[int, list[dict[str, Any]], np.ndarray]] = []
    for pair in sorted(pairs, key=lambda d: d["p"]):
        rows = xf[:, pair["feature"]] == pair["value"]
        for c, members, union in groups:
            overlap = np.sum(rows & union) / max(min(rows.sum(), union.sum()), 1)
            if c == pair["target"] and overlap >= 0.5:
                members.append(pair)
                union |= rows
                break
        else:
            groups.append((pair["target"], [pair], rows.copy()))
    return [(c, members) for c, members, _ in groups]


def _companions(xf: np.ndarray, carriers: np.ndarray, known: list[int]) -> list[int]:
    """Features (besides ``known``) that the carriers share one value of, while the
    other rows seldom have it: the rest of a trigger whose values also occur naturally
    (a white pixel that strokes also reach) and so were not pure enough on their own."""
    rest = np.setdiff1d(np.arange(xf.shape[1]), known)
    if not carriers.any() or len(rest) == 0:
        return []
    sub = xf[carriers][:, rest]
    out = []
    for pos, j in enumerate(rest):
        values, counts = np.unique(sub[:, pos], return_counts=True)
        v = values[counts.argmax()]
        inside = counts.max() / len(sub)
        outside = float(np.mean(xf[~carriers, j] == v))
        if inside >= 0.9 and inside - outside >= 0.5:
            out.append(int(j))
    return out


def _reclassify(
    xf: np.ndarray,
    y: np.ndarray,
    carriers: np.ndarray,
    drop: list[int],
    target: int,
    *,
    enough: float,
    seed: int,
) -> tuple[float, float]:
    """Exclusionary reclassification without the trigger features.

    A classifier that never sees the ``drop`` features is trained on every row but the
    carriers and predicts the carriers; returns the share predicted as another class
    than ``target``, and the same share for the target's other rows out of fold (the
    baseline: how often the class is mistaken anyway; skipped, as 0, when fewer than
    ``enough`` of the carriers move, which no baseline could confirm).
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlwarden.poisoning.detect_data import out_of_sample_probabilities

    keep = np.setdiff1d(np.arange(xf.shape[1]), drop)
    rest = ~carriers
    if len(keep) == 0 or len(np.unique(y[rest])) < 2:
        return 0.0, 0.0
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = clone(est).fit(xf[rest][:, keep], y[rest])
        away = float(np.mean(model.predict(xf[carriers][:, keep]) != target))
        if away < enough or not (y[rest] == target).any():
            return away, 0.0  # not confirmed whatever the baseline: spare the folds
        probs = out_of_sample_probabilities(xf[rest][:, keep], y[rest], estimator=est, seed=seed)
    own = y[rest] == target
    return away, float(np.mean(probs[own].argmax(axis=1) != target))


def feature_triggers(
    x: np.ndarray,
    y: np.ndarray,
    *,
    min_count: int = 8,
    min_purity: float = 0.9,
    alpha: float = 1e-3,
    min_disagreement: float = 0.5,
    seed: int = 0,
) -> Detection:
    """Find feature values that alone predict one label (see the module docstring).

    ``x``: inputs of any shape (flattened to features); ``y``: integer labels.
    ``min_count``: fewest rows sharing a value for it to count as a possible trigger
    (rows, not a fraction: a 1% poison of 1,000 rows is 10 rows). ``min_purity``:
    share of those rows in one class. ``alpha``: family-wise significance level of the
    association test. ``min_disagreement``: share of the trigger rows that a
    classifier without the trigger features must assign to other classes (and at least
    twice the share of the class's other rows) to confirm the trigger.

    Score per row: the share of the trigger's values the row carries (0 when none),
    for rows labelled with the target. ``details["triggers"]`` lists each confirmed
    trigger; ``details["unconfirmed"]`` the predictive values the rest of the data
    explains (natural, not flagged).
    """
    xf = _flat(x)
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    scores = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    details: dict[str, Any] = {"triggers": [], "unconfirmed": []}
    if n < 2 * min_count or len(np.unique(y)) < 2:
        return Detection("feature-trigger", scores, flagged, reasons, details)
    cols = np.arange(xf.shape[1])
    if xf.shape[1] > MAX_FEATURES:
        repeats = [len(xf) - len(np.unique(xf[:, j])) for j in range(xf.shape[1])]
        cols = np.sort(np.argsort(repeats)[::-1][:MAX_FEATURES])
        xf = xf[:, cols]
    pairs = _candidates(xf, y, min_count, min_purity, alpha)
    for target, members in _group(xf, y, pairs):
        feats = sorted({m["feature"] for m in members})
        hits = np.zeros(n)
        for m in members:
            hits += xf[:, m["feature"]] == m["value"]
        share = hits / len(members)
        carriers = (share >= 0.5) & (y == target)
        if carriers.sum() < min_count:
            continue
        extra = _companions(xf, carriers, feats)
        away, baseline = _reclassify(
            xf, y, carriers, feats + extra, target, enough=min_disagreement, seed=seed
        )
        entry = {
            "target": target,
            "features": [int(cols[j]) for j in feats],
            "values": {str(cols[m["feature"]]): float(m["value"]) for m in members},
            "companion_features": [int(cols[j]) for j in extra],
            "rows": int(carriers.sum()),
            "p_value": float(min(m["p"] for m in members)),
            "reclassified_away": round(away, 3),
            "class_baseline": round(baseline, 3),
        }
        if away < min_disagreement or away < 2 * baseline:
            details["unconfirmed"].append(entry)
            continue
        details["triggers"].append(entry)
        flagged |= carriers
        scores = np.maximum(scores, np.where(y == target, share, 0.0))
        shown = ", ".join(f"feature {cols[m['feature']]} = {m['value']:g}" for m in members[:6])
        purity = carriers.sum() / max(int((share >= 0.5).sum()), 1)
        why = (
            f"feature trigger: carries {shown} ({purity:.0%} of the rows with these values "
            f"are labelled {target}); without these features {away:.0%} of them look like "
            f"another class (vs {baseline:.0%} of the class's other rows)"
        )
        for i in np.flatnonzero(carriers):
            reasons[int(i)] = why
    return Detection("feature-trigger", scores, flagged, reasons, details)
