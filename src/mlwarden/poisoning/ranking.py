"""One ranked ``suspicious`` list with calibrated scores from every poisoning detector.

Each detector (:class:`~mlwarden.poisoning.detect_data.Detection`) scores every row on
its own scale: a silhouette, a squared projection, an entropy drop, a share of trigger
values. :func:`combine` puts them on one scale and merges them by a documented rule:

1. **Calibration** (conformal p-values; Vovk et al. 2005, Bates et al. 2023, "Testing
   for outliers with conformal p-values", arXiv:2104.08279). Detector ``d``'s null is
   its own scores on the rows of the classes where it flagged nothing: a clean
   reference taken from the data itself, which a poisoned class never joins however
   heavily it is poisoned (a per-class median/MAD breaks once poison passes half of
   the class). With fewer than :data:`MIN_NULL` such rows the null is every row ``d``
   did not flag. Row ``i``'s p-value is ``(1 + #{null >= s_i}) / (1 + |null|)``.
2. **Combination**: weighted Bonferroni over the detectors that flagged any row,
   ``p_i = min(1, min_d p_d,i / w_d)`` with the weights summing to 1 (equal unless
   given; a detector that flagged nothing makes no claim and takes no share). It
   holds under any dependence between detectors; activation clustering,
   spectral signatures and SPECTRE read the same activations, so Fisher's or
   Stouffer's rule, which assume independence, would overstate agreement.
3. **Confirmation**: a *specific* detector (:data:`SPECIFIC`: it names what it found,
   a trigger's feature values, a reversed trigger, a mixture component, n-grams, and
   the rows carrying it) outranks a *broad* one (activation clustering, spectral
   signatures, STRIP: a cluster or a tail that natural sub-styles of a class also
   form). Once specific detectors have flagged rows, a broad detector's row that no
   specific detector flagged is a candidate only in a class they confirmed, and there
   only when at least half of its flags in that class are confirmed rows and its
   score reaches the median of its scores on those (it looks like the confirmed
   poison by its own measure; a detector whose flags there are mostly unconfirmed is
   reading another structure of the class). The
   other rows are *set aside*: not listed, but kept per detector with the reason
   (:attr:`Ranking.set_aside`). When no specific detector flagged anything the broad
   detectors' flags stand alone, as before. The gate acts only where a specific
   detector has already raised a high finding, so it changes which rows are listed,
   never whether the audit fails; its cost is a second attack in another class that
   only a broad detector sees (set aside, still reported), which we chose over listing
   activation clustering's clean sub-style clusters whenever it misses the poison
   itself (digits BadNets 10%: it flags 49 rows of classes 2, 4 and 9, none poison).
   Figures: docs/benchmarks/poisoning.md, "The combined list".
4. **Listing**: the candidate rows (each detector's own class-level test stands);
   Benjamini-Hochberg at level ``alpha`` over their combined p-values keeps the listed
   ones, so that the expected share of
   clean rows among them stays near ``alpha`` (conformal p-values with BH control the
   false discovery rate, Bates et al. 2023). On data too small to reach ``alpha``
   the level is the smallest combined p-value the nulls can give. Score ``= 1 - p_i``.
   Ties are broken by agreement: Fisher's statistic ``-2 sum log p_d`` over the
   detectors that flagged the row.
5. **Evidence**: each row names the detectors that flagged it with their p-values.

Data-quality detections (label issues, duplicates, outliers) are not poisoning
evidence on their own; they are returned as separate lists (``issues``) so that they
do not dilute the poisoning list.

Example::

    ranked = combine([ac, spec, occl, trig], y)
    ranked.suspicious[0]  # {"index", "score", "p_value", "detectors", "reasons"}
    ranked.issues["label_issues"]  # [{"index", "score", "reasons"}, ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError
from mlwarden.poisoning.detect_data import Detection

#: Detectors of data quality, not poisoning: listed apart (key in ``issues``).
HYGIENE = {
    "label-issues": "label_issues",
    "relabelled-class": "relabelled_class",
    "duplicates": "duplicates",
    "outliers": "outliers",
}
#: Fewest rows of unflagged classes that make a null; below it, every unflagged row.
MIN_NULL = 20
#: False discovery rate (Benjamini-Hochberg) of the listed rows.
ALPHA = 0.05
#: Detectors that name what they found and the rows carrying it (step 3 of the rule).
SPECIFIC = frozenset(
    {
        "feature-trigger",
        "cross-class",
        "trigger-occlusion",
        "query-trigger",
        "trigger-ngrams",
        "trigger-search",
    }
)
#: Quantile of a broad detector's scores on a class's confirmed rows that its
#: unconfirmed rows of that class must reach to stay candidates.
CONFIRM_QUANTILE = 0.5


@dataclass
class Ranking:
    """The merged verdict: the poisoning list, the data-quality lists and what was dropped."""

    suspicious: list[dict[str, Any]] = field(default_factory=list)
    issues: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: rows some detector flagged that Benjamini-Hochberg did not keep
    dropped: int = 0
    #: broad detectors' rows that no specific detector confirmed (rule step 3), each
    #: ``{"index", "detectors", "why"}``: not listed, still the detectors' flags
    set_aside: list[dict[str, Any]] = field(default_factory=list)
    #: per detector: its weight, null size, smallest attainable p-value, rows flagged
    #: and rows of the list it flagged
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)


def conformal_p(det: Detection, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Upper-tail conformal p-value of every row's score against ``det``'s null.

    The null is the scores of rows in classes ``det`` flagged nothing in (at least
    :data:`MIN_NULL` of them), else of every row it did not flag. Returns the p-values
    ``(N,)`` in ``(0, 1]`` and the null's size.
    """
    y = np.asarray(y)
    scores = np.nan_to_num(np.asarray(det.scores, dtype=np.float64), nan=0.0)
    hot = np.unique(y[det.flagged])
    null_mask = ~np.isin(y, hot)
    if null_mask.sum() < MIN_NULL:
        null_mask = ~det.flagged
    null = np.sort(scores[null_mask])
    if len(null) == 0:
        return np.ones(len(scores)), 0
    at_least = len(null) - np.searchsorted(null, scores, side="left")
    return (1.0 + at_least) / (1.0 + len(null)), len(null)


def combine(
    detections: list[Detection],
    y: np.ndarray,
    *,
    weights: dict[str, float] | None = None,
    alpha: float = ALPHA,
) -> Ranking:
    """Merge detections into one calibrated poisoning list and separate data-quality lists.

    ``detections``: every detector that ran, each over all ``N`` rows; ``y``: the labels
    ``(N,)``; ``weights``: relative trust per poisoning detector name (default equal;
    normalised over those present); ``alpha``: false discovery rate of the list.
    See the module docstring for the rule. Scores are in ``[0, 1]``.
    """
    if not 0.0 < alpha < 1.0:
        raise UserError(f"alpha must be in (0, 1); got {alpha}")
    n = len(y)
    for det in detections:
        if len(det.scores) != n or len(det.flagged) != n:
            raise UserError(f"detector {det.name} covers {len(det.scores)} rows, not {n}")
    ranking = Ranking(issues=_issues(detections))
    # a detector that flagged no row makes no claim: it takes no share of alpha
    poison = [d for d in detections if d.name not in HYGIENE and d.flagged.any()]
    if not poison:
        return ranking
    raw = {d.name: float((weights or {}).get(d.name, 1.0)) for d in poison}
    if any(w <= 0 for w in raw.values()):
        raise UserError(f"detector weights must be positive; got {raw}")
    total = sum(raw.values())
    pvals: dict[str, np.ndarray] = {}
    for det in poison:
        p, size = conformal_p(det, y)
        pvals[det.name] = p
        ranking.calibration[det.name] = {
            "weight": round(raw[det.name] / total, 4),
            "null_rows": size,
            "min_p": round(1.0 / (1.0 + size), 6),
        }
    candidates, ranking.set_aside = confirm(poison, y)
    ranking.suspicious, ranking.dropped = _list(poison, pvals, raw, total, alpha, candidates)
    for det in poison:
        cal = ranking.calibration[det.name]
        cal["flagged"] = int(det.flagged.sum())
        cal["listed"] = sum(det.name in r["detectors"] for r in ranking.suspicious)
        cal["set_aside"] = sum(det.name in r["detectors"] for r in ranking.set_aside)
    return ranking


def confirm(
    poison: list[Detection], y: np.ndarray, quantile: float = CONFIRM_QUANTILE
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Step 3 of the rule: the candidate rows ``(N,)`` bool, and the broad detectors'
    rows set aside because no specific detector (:data:`SPECIFIC`) confirms them.

    Example: feature-trigger flags 37 rows of class 0 and activation clustering a
    cluster of 40 rows there (30 of the 37 among them) plus 150 rows of classes 3 and
    5: the candidates are the 37 and those of the other 10 whose silhouette reaches
    the median of the 30's; classes 3 and 5 are set aside.
    """
    y = np.asarray(y)
    flagged = np.zeros(len(y), dtype=bool)
    confirmed = np.zeros(len(y), dtype=bool)
    for det in poison:
        flagged |= det.flagged
        if det.name in SPECIFIC:
            confirmed |= det.flagged
    if not confirmed.any():
        return flagged, []
    names = ", ".join(d.name for d in poison if d.name in SPECIFIC and d.flagged.any())
    keep = confirmed.copy()
    why: dict[int, dict[str, str]] = {}
    classes = set(np.unique(y[confirmed]).tolist())
    for det in (d for d in poison if d.name not in SPECIFIC):
        for c in np.unique(y[det.flagged & ~confirmed]).tolist():
            extra = det.flagged & ~confirmed & (y == c)
            agree = det.flagged & confirmed & (y == c)
            if c not in classes:
                reason = f"class {c}: {names} flagged nothing in it"
                ok = np.zeros(len(y), dtype=bool)
            elif agree.sum() < extra.sum():
                # mostly unconfirmed: it reads something else in this class (spectral
                # signatures' top direction turns to the clean rows once poison is
                # most of the class)
                reason = (
                    f"class {c}: only {int(agree.sum())} of its {int((agree | extra).sum())} "
                    f"rows there are among those {names} flagged"
                )
                ok = np.zeros(len(y), dtype=bool)
            else:
                scores = np.nan_to_num(np.asarray(det.scores, dtype=np.float64), nan=0.0)
                cut = float(np.quantile(scores[agree], quantile))
                what = "median" if quantile == 0.5 else f"{quantile:g} quantile"
                reason = (
                    f"class {c}: scores below {cut:.3g}, the {what} of its scores on the "
                    f"rows {names} flagged there"
                )
                ok = extra & (scores >= cut)
            keep |= ok
            for i in np.flatnonzero(extra & ~ok):
                why.setdefault(int(i), {})[det.name] = reason
    aside = [
        {"index": i, "detectors": sorted(w), "why": "; ".join(f"{n}: {r}" for n, r in w.items())}
        for i, w in sorted(why.items())
        if not keep[i]
    ]
    return keep, aside


def _list(
    poison: list[Detection],
    pvals: dict[str, np.ndarray],
    raw: dict[str, float],
    total: float,
    alpha: float,
    candidates: np.ndarray,
) -> tuple[list[dict[str, Any]], int]:
    """The listed rows (candidates kept by Benjamini-Hochberg over their combined
    p-values), most suspicious first, and how many candidates fell short."""
    idx = np.flatnonzero(candidates)
    if len(idx) == 0:
        return [], 0
    by = [{d.name: float(pvals[d.name][i]) for d in poison if d.flagged[i]} for i in idx]
    comb = np.array([min(1.0, min(p * total / raw[n] for n, p in b.items())) for b in by])
    # on data too small for alpha, the level is the smallest combined p the nulls allow
    level = max(alpha, float(comb.min()))
    order = np.argsort(comb, kind="stable")
    passed = comb[order] <= level * np.arange(1, len(idx) + 1) / len(idx)
    keep = np.zeros(len(idx), dtype=bool)
    if passed.any():
        keep[order[: int(np.flatnonzero(passed).max()) + 1]] = True
    rows: list[dict[str, Any]] = []
    agreement: dict[int, float] = {}
    for j in np.flatnonzero(keep):
        i = int(idx[j])
        agreement[i] = float(sum(-2.0 * np.log(v) for v in by[j].values()))
        rows.append(
            {
                "index": i,
                "score": round(1.0 - float(comb[j]), 6),
                "p_value": float(f"{comb[j]:.3g}"),
                "detectors": {name: float(f"{v:.3g}") for name, v in by[j].items()},
                "reasons": [d.reasons.get(i, d.name) for d in poison if d.flagged[i]],
            }
        )
    rows.sort(key=lambda r: (-r["score"], -agreement[r["index"]], r["index"]))
    return rows, int(len(idx) - keep.sum())


def _issues(detections: list[Detection]) -> dict[str, list[dict[str, Any]]]:
    """The data-quality lists, each ranked by its detector's own score."""
    out: dict[str, list[dict[str, Any]]] = {}
    for det in detections:
        key = HYGIENE.get(det.name)
        if key is None:
            continue
        idx = sorted(det.indices.tolist(), key=lambda i: (-float(det.scores[i]), i))
        out[key] = [
            {
                "index": int(i),
                "score": round(float(det.scores[i]), 4),
                "reasons": [det.reasons.get(int(i), det.name)],
            }
            for i in idx
        ]
    return out
