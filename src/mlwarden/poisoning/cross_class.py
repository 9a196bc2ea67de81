"""A data-only detector for heavy poison: modes of a class that are other classes' rows.

An all-to-one backdoor fills the target class with rows of *other* classes that carry a
trigger. Once the poison passes about a third of the class, the published detectors'
premise breaks: activation clustering looks for a *small* cluster, spectral signatures
remove a fixed ``1.5 x eps`` of each class, and the calibrated ranking's baseline is the
data itself. A dense blended trigger (Chen et al. 2017, arXiv:1712.05526: ``(1 - a) x +
a * pattern``) adds the same pattern to every poisoned row, so in input space the target
class is a two-component mixture along its leading principal direction, whatever
the poison share (the idea of spectral signatures, Tran et al. 2018,
arXiv:1811.00636, in input space, with the split found by exact 1-D 2-means instead of
removing a fixed ``1.5 x eps``).

Which component is poison is decided by content, not size, in the spirit of Chen et
al.'s exclusionary reclassification (arXiv:1811.03728): a classifier trained on the
*other* classes only reads each component's rows after the component's own mean (the
shared pattern, plus the mean content) is replaced by the other classes' mean. The
poisoned component's rows are then other classes' digits, words or records again and
are recognised with high confidence; the genuine component's rows belong to no other
class and are not. A class is flagged when the two components' median confidences
differ by at least :data:`MIN_GAP` and by far more than in the other classes (robust
z over the classes' gaps), so a class whose natural sub-styles differ is left alone.

A second test of the same split does not depend on a reader's confidence: the
*mixture test*. A blended component is ``(1 - a) x_other + a * pattern``: removing its
mean and rescaling it to the other classes' spread gives back the other classes' own
distribution, so a two-sample nearest-neighbour test (Schilling 1986, JASA 81:799;
read as a classifier two-sample test, Lopez-Paz & Oquab 2017, arXiv:1610.06545) cannot
tell it from the other classes' centred rows: its rows' neighbours are half theirs. A
genuine component, or a natural sub-style of the class, keeps its own shape and its
rows' neighbours stay its own. A class is also flagged when one component's share of
same-side neighbours is near chance (at most :data:`MAX_MIX_LOW`) and the other's is at
least :data:`MIN_MIX_GAP` higher; each side is read with the same number of rows (at
least :data:`MIX_MIN_ROWS`). On MNIST-5k, where a linear reader is confident on clean
rows too (clean gaps up to 0.14, blends 0.17-0.21), blended components sit at 0.49-0.52
and the genuine rows near 0.9, while no clean class has a component under 0.6 with a gap
over 0.24 (docs/benchmarks/poisoning.md, "Blends on MNIST-5k").

Needs no model and at least three classes (the other classes must be more than one
class for "recognised as another class" to mean anything). Limits, measured: the
reader test needs classes a linear model recognises confidently, the mixture test
needs poison drawn from the other classes at large (a blend of one source class's rows
is the reader's case), and each component must hold :data:`MIN_SHARE` of its class:
light poison is left to activation clustering, spectral signatures and the trigger
searches.

Example::

    det = cross_class_modes(ds.x, ds.y)
    det.details["classes"]["0"]  # {"gap": 0.53, "flagged": True, ...}
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mlwarden.poisoning.detect_data import Detection, _check, _flat

#: Smallest difference between the two components' median confidence that flags a class.
MIN_GAP = 0.25
#: A flagged gap must also sit this many robust standard deviations above the classes' median gap.
MIN_Z = 5.0
#: Smallest share of its class either component must hold: a median over a handful of
#: rows is noise, and this detector is for heavy poison (lighter poison is left to the
#: small-cluster detectors).
MIN_SHARE = 0.1
#: Leading principal directions of a class along which it is split (the widest gap is
#: kept). More directions find a blend in classes with natural sub-groups more often but
#: widen clean classes' gaps by as much (measured: clean digits' largest gap 0.08 with
#: one, 0.23 with three; MNIST-5k 0.14 with one), so one is the default.
DIRECTIONS = 1
#: Smallest difference of the two components' shares of same-side neighbours (mixture
#: test) that flags a class. Measured: clean classes at most 0.24 on MNIST-5k and 0.20 on
#: 1,600-2,500-row subsets of it, 0.14 on tables, wine, iris, blobs and audio band
#: energies; blends 0.37-0.50 on MNIST-5k and its subsets.
MIN_MIX_GAP = 0.3
#: Largest same-side share of the component the mixture test flags: two samples of one
#: distribution give 0.5, whatever the data, so this bar is anchored at chance rather
#: than at the other classes' gaps (whose spread on MNIST-5k, 0.0-0.24, would hide a
#: 0.43 gap). Measured: blended components 0.49-0.52; clean components 0.65 and more on
#: MNIST-5k, down to 0.56 on its small subsets (where their gaps stay under 0.2).
MAX_MIX_LOW = 0.6
#: Random draws the mixture test's shares are averaged over (sampling noise).
MIX_DRAWS = 3
#: Neighbours each row of the mixture test reads.
NEIGHBOURS = 10
#: Rows of each side of the mixture test (a balanced random sample when more).
MIX_ROWS = 400
#: Fewest rows per side the mixture test reads (with :data:`NEIGHBOURS` of them, fewer
#: rows push every share towards 0.5).
MIX_MIN_ROWS = 60
#: Floor on the classes' gap spread (MAD x 1.4826), so near-identical gaps do not make
#: every small difference significant.
MIN_SPREAD = 0.03


def _two_means_1d(p: np.ndarray, min_mode: int) -> np.ndarray | None:
    """Exact 1-D 2-means (the split of the sorted values with the least within-group
    sum of squares); ``None`` when either side would hold fewer than ``min_mode`` rows."""
    n = len(p)
    if n < 2 * min_mode:
        return None
    order = np.argsort(p, kind="stable")
    s = p[order]
    c1 = np.cumsum(s)
    c2 = np.cumsum(s * s)
    k = np.arange(1, n)  # left side holds k values
    left = c2[:-1] - c1[:-1] ** 2 / k
    right = (c2[-1] - c2[:-1]) - (c1[-1] - c1[:-1]) ** 2 / (n - k)
    sse = left + right
    allowed = (k >= min_mode) & (n - k >= min_mode)
    sse[~allowed] = np.inf
    cut = int(np.argmin(sse)) + 1
    labels = np.zeros(n, dtype=np.int64)
    labels[order[cut:]] = 1
    return labels


def _prepare(x: np.ndarray, max_dims: int, seed: int) -> np.ndarray:
    """Standardised features (constant ones dropped), reduced to ``max_dims`` principal
    components when wider."""
    xf = _flat(x).astype(np.float64)
    std = xf.std(axis=0)
    xf = (xf[:, std > 1e-12] - xf.mean(axis=0)[std > 1e-12]) / std[std > 1e-12]
    if xf.shape[1] > max_dims:
        from sklearn.decomposition import PCA

        # covariance eigh is fast while the features are few; wide inputs (audio
        # waveforms, large images) are fitted on a subsample by a randomised SVD
        wide = xf.shape[1] > 1000
        pca = PCA(
            max_dims, svd_solver="randomized" if wide else "covariance_eigh", random_state=seed
        )
        fit_rows = np.random.default_rng(seed).permutation(len(xf))[:2000] if wide else slice(None)
        xf = pca.fit(xf[fit_rows]).transform(xf)
    return xf


def _other_classifier(
    xf: np.ndarray, y: np.ndarray, rest: np.ndarray, max_rows: int, seed: int
) -> Any:
    """A logistic regression on the rows ``rest`` (at most ``max_rows`` of them)."""
    from sklearn.linear_model import LogisticRegression

    if len(rest) > max_rows:
        rest = np.sort(np.random.default_rng(seed).choice(rest, max_rows, replace=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(max_iter=300, C=0.1).fit(xf[rest], y[rest])


def _class_gap(
    xf: np.ndarray,
    y: np.ndarray,
    c: int,
    pool: np.ndarray,
    min_mode: int,
    max_rows: int,
    seed: int,
) -> dict[str, Any] | None:
    """Split class ``c`` along each of its :data:`DIRECTIONS` leading principal directions
    and keep the split with the widest gap; each component's rows,
    re-centred on the other classes' mean, are read by a classifier of the other classes
    (their rows in the boolean mask ``pool``). Returns the split, each row's confidence
    and the components' median confidences."""
    idx = np.flatnonzero(y == c)
    xc = xf[idx]
    centred = xc - xc.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    rest = np.flatnonzero(pool & (y != c))
    clf = _other_classifier(xf, y, rest, max_rows, seed)
    other_mean = xf[rest].mean(axis=0)
    best: dict[str, Any] | None = None
    for v in vt[:DIRECTIONS]:
        labels = _two_means_1d(centred @ v, max(min_mode, int(np.ceil(MIN_SHARE * len(idx)))))
        if labels is None:
            return None
        moved = xc.copy()
        for m in (0, 1):
            part = labels == m
            moved[part] = xc[part] - xc[part].mean(axis=0) + other_mean
        conf = clf.predict_proba(moved).max(axis=1)
        med = [float(np.median(conf[labels == m])) for m in (0, 1)]
        high = int(np.argmax(med))
        if best is None or med[high] - med[1 - high] > best["gap"]:
            best = {"labels": labels, "conf": conf, "high": high, "medians": med}
            best["gap"] = med[high] - med[1 - high]
    if best is None:
        return None
    return {"index": idx, **best}


def _same_side_share(part: np.ndarray, others: np.ndarray, m: int, seed: int) -> float:
    """Mean share of same-side rows among the :data:`NEIGHBOURS` nearest neighbours of
    ``m`` of ``part``'s rows in a pool of them and ``m`` of ``others`` (about 0.5 when the
    two come from one distribution, 1 when they are apart)."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    a = part[rng.permutation(len(part))[:m]]
    b = others[rng.permutation(len(others))[:m]]
    pool = np.vstack([a, b])
    _, ind = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(pool).kneighbors(a)
    # the first neighbour of a pooled row is itself
    return float(np.mean(ind[:, 1:] < m))


def _mixture(xf: np.ndarray, y: np.ndarray, s: dict[str, Any], c: int, seed: int) -> None:
    """The mixture test on class ``c``'s split ``s`` (adds ``mix``: each component's
    same-side share, ``mix_low``: the component nearer the other classes, ``mix_gap``).
    Each side is centred and scaled to the same RMS radius, so a blend's ``1 - a``
    shrink does not tell it apart, and both components are tested with the same number
    of rows: a share's bias towards 0.5 grows as the sample shrinks, so unequal samples
    would make a small clean component look like the other classes. Components under
    :data:`MIX_MIN_ROWS` rows are not tested (shares NaN, gap 0)."""
    others = xf[y != c] - xf[y != c].mean(axis=0)
    radius = np.sqrt(np.mean(np.sum(others**2, axis=1)))
    parts = [xf[s["index"][s["labels"] == m]] for m in (0, 1)]
    m = min(len(parts[0]), len(parts[1]), len(others), MIX_ROWS)
    s["mix"], s["mix_low"], s["mix_gap"] = [float("nan")] * 2, 0, 0.0
    if m < MIX_MIN_ROWS:
        return
    shares = []
    for part in parts:
        part = part - part.mean(axis=0)
        own = np.sqrt(np.mean(np.sum(part**2, axis=1)))
        scaled = part * radius / max(own, 1e-12)
        draws = [_same_side_share(scaled, others, m, seed + d) for d in range(MIX_DRAWS)]
        shares.append(float(np.mean(draws)))
    low = int(np.argmin(shares))
    s["mix"], s["mix_low"], s["mix_gap"] = shares, low, shares[1 - low] - shares[low]


def _robust(gaps: list[float]) -> tuple[float, float, int]:
    """Median and robust spread (1.4826 x MAD, at least :data:`MIN_SPREAD`) of ``gaps``."""
    if not gaps:
        return 0.0, MIN_SPREAD, 0
    arr = np.array(gaps)
    med = float(np.median(arr))
    return med, max(1.4826 * float(np.median(np.abs(arr - med))), MIN_SPREAD), len(arr)


def _null(
    xf: np.ndarray,
    y: np.ndarray,
    splits: dict[int, dict[str, Any]],
    min_gap: float,
    min_mode: int,
    max_rows: int,
    seed: int,
) -> tuple[float, float, int]:
    """Median and robust spread (1.4826 x MAD, at least :data:`MIN_SPREAD`) of the gaps
    of the classes under ``min_gap``, and how many there are. Those gaps are measured
    again without the candidates' high components: their rows (other classes' content
    under another label) would otherwise blur every class's reading and widen the null."""
    cands = [c for c, s in splits.items() if s["gap"] >= min_gap]
    null = {c: s["gap"] for c, s in splits.items() if c not in cands}
    if cands:
        pool = np.ones(len(y), dtype=bool)
        for c in cands:
            pool[splits[c]["index"][splits[c]["labels"] == splits[c]["high"]]] = False
        for c in null:
            again = _class_gap(xf, y, c, pool, min_mode, max_rows, seed)
            null[c] = null[c] if again is None else again["gap"]
    return _robust(list(null.values()))


def _mix_hot(s: dict[str, Any]) -> bool:
    """The mixture test's verdict on a split: one component at chance against the other
    classes (:data:`MAX_MIX_LOW`), the other far from them (:data:`MIN_MIX_GAP`)."""
    return bool(s["mix_gap"] >= MIN_MIX_GAP and s["mix"][s["mix_low"]] <= MAX_MIX_LOW)


def _flag(det: Detection, c: int, s: dict[str, Any], z: float, zmix: float) -> dict[str, Any]:
    """Score class ``c``'s suspect component and flag it when the reader test or the
    mixture test fires (the reader's pick first, as it reads content); its details row."""
    by_reader = s["gap"] >= det.details["min_gap"] and z >= det.details["min_z"]
    by_mix = _mix_hot(s)
    pick = s["high"] if by_reader or not by_mix else s["mix_low"]
    part = s["labels"] == pick
    rows = s["index"]
    det.scores[rows[part]] = max(s["gap"], s["mix_gap"]) + 1e-3 * s["conf"][part]
    if by_reader or by_mix:
        det.flagged[rows[part]] = True
        test = (
            f"read as other classes (median confidence {s['medians'][pick]:.2f} vs "
            f"{s['medians'][1 - pick]:.2f} for the rest of the class)"
            if by_reader
            else f"as close to the other classes' rows as they are to each other "
            f"(same-side neighbour share {s['mix'][pick]:.2f} vs {s['mix'][1 - pick]:.2f} "
            "for the rest of the class)"
        )
        why = (
            f"cross-class: {int(part.sum())} of the {len(rows)} rows of class {c} form a "
            f"separate component whose rows, with its shared offset removed, are {test}"
        )
        for i in rows[part]:
            det.reasons[int(i)] = why
    return {
        "sizes": [int(np.sum(s["labels"] == m)) for m in (0, 1)],
        "medians": [round(v, 3) for v in s["medians"]],
        "gap": round(s["gap"], 3),
        "z": round(z, 2),
        "mix": [None if np.isnan(v) else round(v, 3) for v in s["mix"]],
        "mix_gap": round(s["mix_gap"], 3),
        "mix_z": round(zmix, 2),
        "test": "reader" if by_reader else "mixture" if by_mix else None,
        "flagged": bool(by_reader or by_mix),
    }


def cross_class_modes(
    x: np.ndarray,
    y: np.ndarray,
    *,
    min_gap: float = MIN_GAP,
    min_z: float = MIN_Z,
    min_class_size: int = 20,
    max_rows: int = 2000,
    max_dims: int = 64,
    seed: int = 0,
) -> Detection:
    """Flag the component of a class made of other classes' rows (heavy poison, any share).

    ``x``: inputs ``(N, ...)`` of any shape (flattened); ``y``: labels. See the module
    docstring for the rule. Score of a row: its component's median confidence minus the
    other component's (0 when lower), plus a thousandth of its own confidence to order
    rows within a component; flagged rows are the high component of a flagged class.
    ``details["classes"]`` gives each class's split sizes, medians, gap and robust z, the
    mixture test's same-side shares (``mix``), their gap and robust z, and which test
    fired (``test``);
    ``details["skipped"]`` says why nothing was examined (fewer than 3 classes).
    """
    _check(np.asarray(x).reshape(len(x), -1), y)
    y = np.asarray(y)
    n = len(y)
    det = Detection("cross-class", np.zeros(n), np.zeros(n, dtype=bool), {}, {"classes": {}})
    counts = np.bincount(y)
    big = [int(c) for c in np.flatnonzero(counts >= min_class_size)]
    if len(np.flatnonzero(counts)) < 3 or not big:
        det.details["skipped"] = (
            "needs at least 3 classes (rows are recognised as one of the other classes)"
        )
        return det
    xf = _prepare(x, max_dims, seed)
    min_mode = max(5, min_class_size // 4)
    every = np.ones(n, dtype=bool)
    splits = {c: _class_gap(xf, y, c, every, min_mode, max_rows, seed) for c in big}
    found = {c: s for c, s in splits.items() if s is not None}
    med, spread, size = _null(xf, y, found, min_gap, min_mode, max_rows, seed)
    for c, s in found.items():
        _mixture(xf, y, s, c, seed)
    mix_med, mix_spread, mix_size = _robust(
        # classes too small to test say nothing about the clean spread
        [
            s["mix_gap"]
            for s in found.values()
            if s["mix_gap"] < MIN_MIX_GAP and not np.isnan(s["mix"][0])
        ]
    )
    det.details.update(min_gap=min_gap, min_z=min_z)
    for c, s in found.items():
        # with fewer than two classes to compare with there is no null: nothing is flagged
        z = (s["gap"] - med) / spread if size >= 2 else 0.0
        zmix = (s["mix_gap"] - mix_med) / mix_spread if mix_size >= 2 else 0.0
        det.details["classes"][str(c)] = _flag(det, c, s, z, zmix)
    det.details["median_gap"] = round(med, 3)
    det.details["median_mix_gap"] = round(mix_med, 3)
    return det
