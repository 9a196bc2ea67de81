"""Trigger search by queries: a black-box Neural Cleanse over features.

Neural Cleanse (Wang et al. 2019, "Neural Cleanse: Identifying and Mitigating Backdoor
Attacks in Neural Networks", IEEE S&P) reverses, for every class, the smallest input
change that turns other classes' inputs into that class; a backdoored class needs a
change far smaller than the others. It needs gradients. Models without them
(scikit-learn trees and boosting, ONNX run as is, a deployed API) get the same search
here, by queries only:

1. **Candidates.** For every feature, the values it repeats exactly most often in the
   data (a planted trigger repeats one value in every poisoned row, inside or at the
   edge of the range); a continuous feature that repeats nothing offers none.
2. **Single-feature screen.** Each (feature, value) is stamped on probe rows; its gain
   for class ``c`` is the mean rise of the class's score (the flip rate for a
   labels-only model) on probe rows not predicted ``c``.
3. **Greedy growth per class** (a zeroth-order, coordinate-wise version of Neural
   Cleanse's mask minimisation): starting empty, add the candidate feature that most
   raises the flip rate to ``c``, until ``min_flip`` of the probe rows flip or
   ``max_features`` are set. The class's trigger size is the number of features set
   (``max_features + 1`` when it never flips enough).
4. **Anomaly and verification.** As in Neural Cleanse, a class whose trigger is much
   smaller than the others' (at most half the median class's size) is suspected; its trigger is then stamped on *fresh* rows of other classes that the
   search never saw, and reported only when it flips at least ``min_flip`` of them.
   With two classes the median is the mean of the two sizes, and a natural-variation
   null decides in addition: stamping the same features with the values real rows of
   the class have there must flip at most :data:`DONOR_MAX` of the other class (median
   over :data:`DONORS` such rows); values typical of the class are a natural
   shortcut, not a trigger.

The number of queries (rows sent to the model) is counted and capped by ``budget``; a
search cut short by the budget says so (``details["complete"]`` is False), so a caller
can fail closed. :func:`trigger_carriers` then marks the training rows of the target
class that carry the trigger and lose the target when it is taken away (by queries).

Example::

    res = query_trigger_search(gbm, x, y, num_classes=10, budget=50_000)
    res.suspected            # [7]
    res.triggers[7]          # {"values": {"37": 1.0, "38": 1.0, "39": 1.0}, "flip_rate": 0.98, ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError
from mlwarden.poisoning.detect_data import Detection, _flat

#: Candidate values tried per feature (min, max and the most repeated values).
VALUES_PER_FEATURE = 4
#: Queries (rows) the search may send to a local model and to a deployed API.
LOCAL_BUDGET = 50_000
HTTP_BUDGET = 10_000
#: Fresh rows (never used by the search) a suspected trigger is verified on, at most.
VERIFY_ROWS = 256
#: Two classes: rows of the class lending their own values (the natural-donor null),
#: other-class rows they are stamped on, and the largest median share they may flip.
DONORS = 32
DONOR_ROWS = 64
DONOR_MAX = 0.2
#: Features tried at each greedy step (the best single-feature gains of the class).
BEAM = 6


class _OutOfBudget(Exception):
    """The query budget would be exceeded by the next batch."""


@dataclass
class QueryTriggerResult:
    """Outcome of :func:`query_trigger_search`.

    ``sizes``: features each class's trigger needs (``max_features + 1`` = none found);
    ``anomaly``: the median size over the class's (higher = smaller trigger than the
    other classes; 2 = half); ``triggers``: per suspected class, the feature values and
    the flip rate verified on fresh rows; ``queries``: rows sent to the model.
    """

    sizes: dict[int, int]
    anomaly: dict[int, float]
    triggers: dict[int, dict[str, Any]]
    queries: int
    budget: int
    complete: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def suspected(self) -> list[int]:
        """Classes with a verified, anomalously small trigger."""
        return sorted(self.triggers)


class _Oracle:
    """The model's class scores by queries, counting every row against the budget."""

    def __init__(self, model: Any, num_classes: int, budget: int) -> None:
        from mlwarden.core.target import as_target, probabilities

        self.target = model if hasattr(model, "predict_labels") else as_target(model)
        self._probabilities = probabilities
        self.k = num_classes
        self.budget = budget
        self.used = 0

    def scores(self, xf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if self.used + len(xf) > self.budget:
            raise _OutOfBudget
        self.used += len(xf)
        p = self._probabilities(self.target, xf.reshape((len(xf), *shape)).astype(np.float32))
        if p.shape[1] < self.k:  # a labels-only model that never answered the last classes
            p = np.pad(p, ((0, 0), (0, self.k - p.shape[1])))
        return np.asarray(p[:, : self.k], dtype=np.float64)


def _candidate_values(xf: np.ndarray, wide: bool = False) -> list[np.ndarray]:
    """Per feature: the values it repeats exactly most often (at least 1% of the rows,
    at most :data:`VALUES_PER_FEATURE`); none for a feature that repeats nothing.
    ``wide`` (clean inputs): up to twice as many repeated values, and the feature's
    smallest and largest value when it repeats any.

    A planted trigger repeats one value in every poisoned row, so the values the data
    repeats hold it. Extremes of continuous features are left out on purpose: pushing a
    strong feature out of its range flips any class with a few features, which would
    hide a small trigger among equally small natural shortcuts."""
    out = []
    floor = max(3, int(0.01 * len(xf)))
    for j in range(xf.shape[1]):
        vals, counts = np.unique(xf[:, j], return_counts=True)
        top = np.argsort(counts, kind="stable")[::-1][: VALUES_PER_FEATURE * (1 + wide)]
        keep = vals[top[counts[top] >= floor]]
        if wide and len(keep):
            # clean inputs (``mlwarden backdoor``) do not repeat a planted value more
            # than it occurs naturally; a less common or edge-of-range one is among these
            keep = np.unique(np.concatenate([keep, vals[[0, -1]]]))
        out.append(keep)
    return out


def _stamp(rows: np.ndarray, values: dict[int, float]) -> np.ndarray:
    out = rows.copy()
    for j, v in values.items():
        out[:, j] = v
    return out


def _single_gains(
    oracle: _Oracle, probe: np.ndarray, base: np.ndarray, cands: list[np.ndarray], shape: tuple
) -> np.ndarray:
    """``gain[c, j]``: best over feature ``j``'s values of the mean rise of class ``c``'s
    score on probe rows not predicted ``c``; ``best[c, j]`` the value giving it."""
    k = oracle.k
    gains = np.full((k, len(cands)), -np.inf)
    best = np.zeros((k, len(cands)))
    pred = base.argmax(1)
    for j, vals in enumerate(cands):
        if not len(vals):
            continue
        batch = np.concatenate([_stamp(probe, {j: float(v)}) for v in vals])
        p = oracle.scores(batch, shape).reshape(len(vals), len(probe), k)
        rise = p - base[None]
        for c in range(k):
            other = pred != c
            if not other.any():
                continue
            g = rise[:, other, c].mean(axis=1)
            gains[c, j] = g.max()
            best[c, j] = vals[int(g.argmax())]
    return np.stack([gains, best])


def _grow(
    oracle: _Oracle,
    probe: np.ndarray,
    c: int,
    ranked: list[tuple[int, float]],
    max_features: int,
    min_flip: float,
    shape: tuple,
) -> tuple[dict[int, float], float, int]:
    """Greedy trigger growth for class ``c``; returns the values set, the flip rate and
    the size at which ``min_flip`` was first reached (``max_features + 1``: never). Growth
    goes on for up to two features past that size while the flip rate is below 0.98, so
    the trigger reported is the whole one, not the part that just reaches the bar."""
    chosen: dict[int, float] = {}
    flip = 0.0
    size = max_features + 1
    for _ in range(max_features):
        pool = [(j, v) for j, v in ranked if j not in chosen][:BEAM]
        if not pool:
            break
        batch = np.concatenate([_stamp(probe, {**chosen, j: v}) for j, v in pool])
        p = oracle.scores(batch, shape).reshape(len(pool), len(probe), oracle.k)
        flips = (p.argmax(2) == c).mean(axis=1)
        score = flips + 1e-3 * p[:, :, c].mean(axis=1)  # ties: the larger score rise
        i = int(score.argmax())
        if size <= max_features and flips[i] <= flip:
            break  # past the bar and no longer improving
        chosen[pool[i][0]] = pool[i][1]
        flip = float(flips[i])
        if flip >= min_flip:
            size = min(size, len(chosen))
        if flip >= 0.98 or len(chosen) >= size + 2:
            break
    return chosen, flip, size


def _anomaly(sizes: dict[int, int]) -> dict[int, float]:
    """How many times smaller than the median class's trigger each class's is.

    Neural Cleanse scores its continuous L1 norms with a median/MAD index; trigger sizes
    here are small integers over a few classes, where the MAD is often 0 or as coarse as
    the sizes themselves, so the ratio to the median is the stabler index (2 = half the
    median size)."""
    med = float(np.median(list(sizes.values())))
    return {c: round(med / max(s, 1), 3) for c, s in sizes.items()}


def query_trigger_search(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    budget: int = 50_000,
    probes: int = 32,
    max_features: int = 6,
    min_flip: float = 0.8,
    threshold: float = 2.0,
    seed: int = 0,
    wide: bool = False,
) -> QueryTriggerResult:
    """Search every class for a small feature trigger by queries (module docstring).

    ``model``: anything :func:`~mlwarden.core.target.as_target` takes (a scikit-learn
    estimator, an ONNX or HTTP Target, a callable); scores or labels only. ``x``, ``y``:
    rows to probe with (the training data or a clean sample). ``budget``: most rows
    sent to the model. ``probes``: rows the search stamps (up to :data:`VERIFY_ROWS` others verify).
    ``max_features``: largest trigger searched. ``min_flip``: share of other classes'
    rows a trigger must flip, in the search and on the fresh rows. ``threshold``:
    times the median class's trigger size a class's must be smaller by to be suspicious.
    ``wide``: for clean ``x``, where a planted value repeats no more than it does
    naturally, try twice as many repeated values per feature and each feature's
    smallest and largest value (off for training data, where the extremes' natural
    shortcuts would hide a small trigger).
    """
    if budget < 1 or probes < 2 or max_features < 1:
        raise UserError("the query budget, probe rows and trigger size must be positive")
    xf = _flat(x)
    shape = tuple(np.asarray(x).shape[1:])
    y = np.asarray(y, dtype=np.int64)
    if len(xf) < 2 * probes:
        raise UserError(f"the trigger search needs at least {2 * probes} rows; got {len(xf)}")
    oracle = _Oracle(model, num_classes, budget)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(xf))
    probe, fresh = xf[order[:probes]], xf[order[probes : probes + VERIFY_ROWS]]
    cands = _candidate_values(xf, wide)
    sizes: dict[int, int] = {}
    grown: dict[int, tuple[dict[int, float], float, int]] = {}
    complete = True
    try:
        base = oracle.scores(probe, shape)
        gains, best = _single_gains(oracle, probe, base, cands, shape)
        for c in range(num_classes):
            ranked = [
                (int(j), float(best[c, j]))
                for j in np.argsort(-gains[c])
                if np.isfinite(gains[c, j])
            ]
            if not np.isfinite(gains[c]).any():
                continue  # every probe row already is class c
            grown[c] = _grow(oracle, probe, c, ranked, max_features, min_flip, shape)
            sizes[c] = grown[c][2]
    except _OutOfBudget:
        complete = False
    # two classes: the median of two sizes is their mean, so a class needing at most
    # half of it is judged too, with the natural-donor null below
    anomaly = _anomaly(sizes) if len(sizes) >= 2 else {}
    triggers: dict[int, dict[str, Any]] = {}
    donors: dict[int, float] = {}
    for c, idx in anomaly.items():
        if idx < threshold or sizes[c] > max_features:
            continue
        chosen, flip, _ = grown[c]
        try:
            if len(sizes) == 2:
                donors[c] = _donor_flip(oracle, xf, y, fresh, c, chosen, shape, rng)
                if donors[c] > DONOR_MAX:
                    continue  # the class's own rows carry such values: a natural shortcut
            rows = fresh[oracle.scores(fresh, shape).argmax(1) != c]
            verified = (
                float(np.mean(oracle.scores(_stamp(rows, chosen), shape).argmax(1) == c))
                if len(rows)
                else 0.0
            )
        except _OutOfBudget:
            complete = False
            break
        if verified >= min_flip:
            triggers[c] = {
                "target": c,
                "values": {str(j): v for j, v in sorted(chosen.items())},
                "features": sorted(chosen),
                "search_flip_rate": round(flip, 3),
                "flip_rate": round(verified, 3),
                "verified_on": int(len(rows)),
                "anomaly_index": anomaly[c],
            }
    return QueryTriggerResult(
        sizes=sizes,
        anomaly=anomaly,
        triggers=triggers,
        queries=oracle.used,
        budget=budget,
        complete=complete,
        details={
            "num_classes": num_classes,
            "features": int(xf.shape[1]),
            "features_searched": int(sum(len(v) > 0 for v in cands)),
            "probes": probes,
            "max_features": max_features,
            "wide": wide,
            "donor_flip": donors,
        },
    )


def _donor_flip(
    oracle: _Oracle,
    xf: np.ndarray,
    y: np.ndarray,
    fresh: np.ndarray,
    c: int,
    chosen: dict[int, float],
    shape: tuple,
    rng: np.random.Generator,
) -> float:
    """The natural-variation null of a two-class search: with no third class to set a
    median trigger size, the trigger's features are stamped on other-class rows with
    the values that :data:`DONORS` rows labelled ``c`` really have there; the median
    share flipped to ``c``. Natural shortcuts (values typical of ``c``) flip many;
    a planted combination, carried by a minority of ``c``'s rows, flips few."""
    pool = np.flatnonzero(y == c)
    if not len(pool):
        return 0.0
    donors = xf[rng.choice(pool, size=min(DONORS, len(pool)), replace=False)]
    base = fresh[: DONOR_ROWS * 2]
    rows = base[oracle.scores(base, shape).argmax(1) != c][:DONOR_ROWS]
    if not len(rows):
        return 1.0
    feats = list(chosen)
    batch = np.concatenate([_stamp(rows, dict(zip(feats, d[feats], strict=True))) for d in donors])
    hit = oracle.scores(batch, shape).argmax(1).reshape(len(donors), len(rows)) == c
    return float(np.median(hit.mean(axis=1)))


def trigger_carriers(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    result: QueryTriggerResult,
    *,
    tolerance: float = 0.05,
    budget: int | None = None,
) -> Detection:
    """Training rows that carry a found trigger: labelled with its target, within
    ``tolerance`` (a fraction of the feature's range) of at least half of its values,
    and predicted as another class once those features take the median of the other
    classes' rows (checked by queries; ``budget`` caps them, default the search's).

    Flagged rows are listed with the trigger and the class they fall back to.
    """
    xf = _flat(x)
    shape = tuple(np.asarray(x).shape[1:])
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    scores = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    span = np.maximum(xf.max(0) - xf.min(0), 1e-12)
    oracle = _Oracle(model, int(result.details["num_classes"]), budget or result.budget)
    for c, trig in result.triggers.items():
        feats = np.array(trig["features"], dtype=int)
        vals = np.array([trig["values"][str(j)] for j in feats])
        near = np.abs(xf[:, feats] - vals) <= tolerance * span[feats]
        share = near.mean(axis=1)
        cand = np.flatnonzero((y == c) & (share >= 0.5))
        if not len(cand):
            continue
        neutral = np.median(xf[y != c][:, feats], axis=0)
        try:
            pred = oracle.scores(
                _stamp(xf[cand], dict(zip(feats.tolist(), neutral.tolist(), strict=True))), shape
            ).argmax(1)
        except _OutOfBudget:
            break
        away = cand[pred != c]
        flagged[away] = True
        scores[away] = np.maximum(scores[away], share[cand][pred != c])
        shown = ", ".join(f"feature {j} = {v:g}" for j, v in zip(feats, vals, strict=True))
        for i, back in zip(away, pred[pred != c], strict=True):
            reasons[int(i)] = (
                f"query trigger search: carries {shown}, which flips {trig['flip_rate']:.0%} "
                f"of other classes' rows to {c}; without it the model says {int(back)}"
            )
    return Detection("query-trigger", scores, flagged, reasons, {"triggers": result.triggers})


def trigger_finding(
    result: QueryTriggerResult, c: int, artifact: str | None, *, rows: int | None = None
) -> Any:
    """MLW-DAT-016 for the trigger found for class ``c``: the feature values, the flip
    rate verified on fresh rows, the queries spent and the budget. ``rows``: training
    rows found carrying it (``mlwarden data``), if any."""
    from mlwarden.core.findings import Finding, Severity

    trig = result.triggers[c]
    shown = ", ".join(f"feature {j} = {v:g}" for j, v in list(trig["values"].items())[:8])
    sizes = sorted(result.sizes.values())
    carried = "" if rows is None else f" {rows} training rows labelled {c} carry it."
    return Finding(
        rule="MLW-DAT-016",
        title=(
            f"Trigger found by queries: setting {len(trig['values'])} feature(s) turns "
            f"{trig['flip_rate']:.0%} of other classes' inputs into class {c}"
        ),
        severity=Severity.HIGH,
        atlas=["AML.T0018.000", "AML.T0043.004", "AML.T0020"],
        mitigations=["AML.M0008", "AML.M0007", "AML.M0025"],
        description=(
            f"A trigger search by queries only (a black-box Neural Cleanse over features, "
            f"Wang et al. 2019) found {shown}: stamped on {trig['verified_on']} fresh inputs "
            f"of other classes that the search never saw, it turned {trig['flip_rate']:.0%} "
            f"of them into class {c}. Class {c} needs {len(trig['values'])} feature(s); the "
            f"classes need {sizes}: {trig['anomaly_index']:.1f} times fewer than the median "
            f"class (2 or more marks a backdoor target).{carried} {result.queries} queries of a {result.budget} budget."
        ),
        recommendation=(
            "Do not deploy this model. Remove the training rows that carry these values "
            "(listed in 'suspicious' by 'mlwarden data DATA --model MODEL'), retrain, and "
            "check that inputs carrying them are no longer answered with this class."
        ),
        evidence={
            **trig,
            "sizes": result.sizes,
            "queries": result.queries,
            "budget": result.budget,
        },
        artifact=artifact,
        check="query-trigger",
        owasp=["ML10"],
    )
