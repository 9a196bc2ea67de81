"""Text training-data audit: trigger n-grams, exact and near duplicates, label issues.

The checks ``mlwarden data`` runs on a text :class:`~mlwarden.core.data.Dataset` (the
sensitive-data scan runs on every text set before these):

* :func:`trigger_ngrams` — backdoor triggers such as BadNL's rare words and sentences
  (Chen et al. 2021, "BadNL: Backdoor Attacks against NLP Models with
  Semantic-preserving Improvements", arXiv:2006.01043). A word n-gram (n = 1..3) is a
  *candidate* when at least ``min_support`` distinct texts carry it, at least
  ``min_purity`` of them have one label, and a one-sided binomial test against that
  label's base rate is significant after Bonferroni over every n-gram tested. Topic
  words pass that test too (``delayed`` in airline complaints), so a candidate is
  *confirmed* only when the rest of its texts disagrees with the label: with every
  candidate n-gram cut out, cross-validated probabilities of the label are lower for
  the carriers than for the other texts of that label (one-sided Mann-Whitney U,
  Bonferroni over candidates) and their median lies at least ``min_shift`` of the way
  towards the texts of the other classes. Poisoned
  texts are ordinary texts of any class with a trigger and a new label; topic words
  sit in texts whose content agrees with their label.
* :func:`text_duplicates` — exact duplicates after normalisation (NFKC, invisible
  characters, homoglyphs, case, punctuation and spacing) and near duplicates by MinHash
  over character 5-shingles (Broder 1997) with LSH banding and an exact Jaccard check,
  ``O(N * perms)`` memory; copies whose label differs from the first copy are listed
  apart (``conflicts``).
* label issues — confident learning (Northcutt et al. 2021, arXiv:1911.00068, through
  :func:`mlwarden.poisoning.detect_data.label_issues`) on cross-validated TF-IDF +
  logistic-regression probabilities of the texts with candidate triggers cut out: a
  model that sees the trigger learns it and would call poisoned rows correctly
  labelled.

Example::

    ds = load_dataset("reviews.csv")
    audit = audit_texts(ds.x, ds.y)
    audit.triggers[0].ngram, audit.triggers[0].rows[:5]
"""

from __future__ import annotations

import re
import warnings
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError
from mlwarden.poisoning.detect_data import Detection, label_issues

#: Word tokens: Unicode letters, digits and underscore (any script).
WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Case-folded words of ``text`` after NFKC, invisible-character stripping and
    homoglyph folding, joined by single spaces (punctuation and spacing dropped)."""
    from mlwarden.defenses.text import fold_homoglyphs, nfkc, strip_invisible

    return " ".join(WORD.findall(fold_homoglyphs(strip_invisible(nfkc(text))).casefold()))


@dataclass
class TriggerNgram:
    """A word n-gram tied to one label (see :func:`trigger_ngrams`)."""

    ngram: str
    label: int
    support: int  #: distinct texts carrying it
    purity: float  #: fraction of them with ``label``
    p_value: float  #: binomial test of purity against the label's base rate
    disagreement: float  #: carriers whose text without candidates is predicted otherwise
    base_disagreement: float  #: the same rate over all texts of ``label``
    p_context: float  #: Mann-Whitney U: carriers read less like ``label`` than its other texts
    shift: float = 0.0  #: 0 = carriers read like ``label``, 1 = like the other classes
    rows: list[int] = field(default_factory=list)  #: every carrier labelled ``label``
    confirmed: bool = False
    members: list[str] = field(default_factory=list)  #: n-grams merged into this one

    def as_dict(self) -> dict[str, Any]:
        return {
            "ngram": self.ngram,
            "label": self.label,
            "support": self.support,
            "purity": round(self.purity, 4),
            "p_value": float(f"{self.p_value:.3g}"),
            "disagreement": round(self.disagreement, 4),
            "base_disagreement": round(self.base_disagreement, 4),
            "p_context": float(f"{self.p_context:.3g}"),
            "shift": round(self.shift, 3),
            "rows": len(self.rows),
            "members": self.members,
        }


@dataclass
class TextAudit:
    """What :func:`audit_texts` found; each part is also a :class:`Detection`."""

    triggers: list[TriggerNgram]  #: confirmed triggers, strongest first
    candidates: int  #: n-grams that passed the purity test
    tested: int  #: n-grams with enough support to be tested
    detections: list[Detection]
    probs: np.ndarray  #: cross-validated probabilities (N, K), candidates cut out
    candidate_ngrams: list[TriggerNgram] = field(default_factory=list)  #: all candidates


def _ngrams(tokens: Sequence[str], max_n: int) -> set[str]:
    return {
        " ".join(tokens[i : i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1)
    }


def _count(
    token_lists: Sequence[Sequence[str]], y: np.ndarray, rows: np.ndarray, k: int, max_n: int
) -> tuple[list[str], np.ndarray]:
    """Per n-gram, how many of ``rows`` carry it, by label: (names, counts (G, k))."""
    ids: dict[str, int] = {}
    codes = array("q")
    for i in rows:
        for g in _ngrams(token_lists[i], max_n):
            codes.append(ids.setdefault(g, len(ids)) * k + int(y[i]))
    counts = np.bincount(np.frombuffer(codes, dtype=np.int64), minlength=len(ids) * k)
    return list(ids), counts.reshape(len(ids), k)


def trigger_ngrams(
    token_lists: Sequence[Sequence[str]],
    y: np.ndarray,
    *,
    unique: np.ndarray | None = None,
    max_n: int = 3,
    min_support: int = 8,
    min_purity: float = 0.9,
    alpha: float = 0.01,
) -> tuple[list[TriggerNgram], int]:
    """Candidate trigger n-grams (not yet confirmed) and the number of n-grams tested.

    ``token_lists``: the words of each text (:func:`normalise` split on spaces);
    ``unique``: the rows counted (one per exact duplicate group, so copies do not count
    as evidence twice; default all). See the module docs for the tests.
    """
    from scipy.stats import binom

    k = int(y.max()) + 1
    rows = np.arange(len(y)) if unique is None else unique
    names, counts = _count(token_lists, y, rows, k, max_n)
    base = np.bincount(y[rows], minlength=k) / len(rows)
    support = counts.sum(axis=1)
    tested = np.flatnonzero(support >= min_support)
    if len(tested) == 0:
        return [], 0
    top = counts[tested].argmax(axis=1)
    hits = counts[tested, top]
    purity = hits / support[tested]
    p = binom.sf(hits - 1, support[tested], base[top])
    keep = (purity >= min_purity) & (p < alpha / len(tested))
    found = [
        TriggerNgram(
            ngram=names[g],
            label=int(top[j]),
            support=int(support[g]),
            purity=float(purity[j]),
            p_value=float(p[j]),
            disagreement=0.0,
            base_disagreement=0.0,
            p_context=1.0,
        )
        for j, g in enumerate(tested)
        if keep[j]
    ]
    return found, len(tested)


def _cut(tokens: Sequence[str], grams: set[str], max_n: int) -> tuple[str, bool]:
    """``tokens`` without every occurrence of the n-grams in ``grams``; did any occur."""
    drop = np.zeros(len(tokens), dtype=bool)
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            if " ".join(tokens[i : i + n]) in grams:
                drop[i : i + n] = True
    return " ".join(t for t, d in zip(tokens, drop, strict=True) if not d), bool(drop.any())


def text_probabilities(
    texts: Sequence[str], y: np.ndarray, *, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-fold class probabilities ``(N, K)`` of a TF-IDF (word 1-2 grams) + logistic
    regression model, ``folds``-fold stratified (fewer when a class is smaller)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    counts = np.bincount(y)
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < 2:
        raise UserError("the label check needs at least 2 texts of each of at least 2 classes")
    folds = int(min(folds, present.min()))
    model = make_pipeline(
        TfidfVectorizer(
            token_pattern=r"(?u)\b\w+\b", ngram_range=(1, 2), min_df=2, sublinear_tf=True
        ),
        LogisticRegression(max_iter=1000, C=4.0),
    )
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    # an empty text (only a trigger, cut out) still needs a token for the vectorizer
    docs = [t or "_" for t in texts]
    # a small sparse problem: threaded BLAS inside L-BFGS only contends (10x slower loaded)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        proba = cross_val_predict(model, docs, y, cv=cv, method="predict_proba")
    full = np.zeros((len(y), len(counts)))
    full[:, np.flatnonzero(counts > 0)] = proba
    return full


def _confirm(
    cands: list[TriggerNgram],
    carriers: dict[str, np.ndarray],
    y: np.ndarray,
    probs: np.ndarray,
    *,
    alpha: float,
    min_shift: float,
) -> list[TriggerNgram]:
    """Keep the candidates whose carriers' remaining text reads as another class.

    ``q = p(label | text without candidates)``: the carriers' ``q`` must be lower than
    that of the other texts of the label (one-sided Mann-Whitney U, Bonferroni over
    candidates) and its median at least ``min_shift`` of the way from those texts'
    median towards the median of texts of other classes.
    """
    from scipy.stats import mannwhitneyu

    pred = probs.argmax(axis=1)
    out = []
    for c in cands:
        rows = carriers[c.ngram]
        rows = rows[y[rows] == c.label]
        own = y == c.label
        own[rows] = False
        q = probs[:, c.label]
        qa, qb, qc = np.median(q[own]), np.median(q[y != c.label]), np.median(q[rows])
        c.shift = float((qa - qc) / max(qa - qb, 1e-6))
        c.base_disagreement = float(np.mean(pred[own] != c.label))
        c.disagreement = float(np.mean(pred[rows] != c.label)) if len(rows) else 0.0
        if len(rows) >= 2 and own.sum() >= 2:
            c.p_context = float(mannwhitneyu(q[rows], q[own], alternative="less").pvalue)
        c.rows = rows.tolist()
        c.confirmed = c.p_context < alpha / max(len(cands), 1) and c.shift >= min_shift
        if c.confirmed:
            out.append(c)
    return _merge(out)


def _merge(found: list[TriggerNgram]) -> list[TriggerNgram]:
    """One entry per trigger: an n-gram whose carriers mostly (80%) lie among those of a
    stronger one joins it (the words of one sentence trigger; a word trigger followed by
    common words). Groups start from the widest support, longest n-gram first."""
    found = sorted(found, key=lambda c: (-len(c.rows), -len(c.ngram.split()), c.p_context))
    groups: list[tuple[TriggerNgram, set[int]]] = []
    for c in found:
        rows = set(c.rows)
        for g, covered in groups:
            if g.label == c.label and len(rows & covered) >= 0.8 * len(rows):
                g.members.append(c.ngram)
                break
        else:
            c.members = [c.ngram]
            groups.append((c, rows))
    return sorted((g for g, _ in groups), key=lambda c: c.p_context)


def audit_texts(
    texts: Sequence[str],
    y: np.ndarray,
    *,
    seed: int = 0,
    max_n: int = 3,
    min_support: int = 8,
    min_purity: float = 0.9,
    alpha: float = 0.01,
    min_shift: float = 0.5,
    near: float = 0.8,
) -> TextAudit:
    """Trigger n-grams, duplicates and label issues of a labelled text set.

    ``y``: int class indices. ``min_support`` distinct texts, ``min_purity`` and
    ``alpha`` (family-wise, Bonferroni) for trigger candidates, ``min_shift`` for their
    confirmation (see :func:`_confirm`); ``near``: Jaccard similarity of character 5-shingles from which two
    texts are near duplicates. Returns :class:`TextAudit`.
    """
    y = np.asarray(y, dtype=np.int64)
    norm = [normalise(str(t)) for t in texts]
    token_lists = [n.split() for n in norm]
    dup = text_duplicates(norm, y, near=near, normalised=True)
    first: dict[str, int] = {}
    for i, t in enumerate(norm):
        first.setdefault(t, i)
    unique = np.asarray(sorted(first.values()), dtype=np.int64)
    cands, tested = trigger_ngrams(
        token_lists,
        y,
        unique=unique,
        max_n=max_n,
        min_support=min_support,
        min_purity=min_purity,
        alpha=alpha,
    )
    grams = {c.ngram for c in cands}
    cut_texts: list[str] = []
    carriers: dict[str, list[int]] = {g: [] for g in grams}
    for i, toks in enumerate(token_lists):
        text, hit = _cut(toks, grams, max_n) if grams else (" ".join(toks), False)
        cut_texts.append(text)
        if hit:
            for g in _ngrams(toks, max_n) & grams:
                carriers[g].append(i)
    probs = text_probabilities(cut_texts, y, seed=seed)
    triggers = _confirm(
        cands,
        {g: np.asarray(r, dtype=np.int64) for g, r in carriers.items()},
        y,
        probs,
        alpha=alpha,
        min_shift=min_shift,
    )
    for trig in triggers:
        trig.ngram = _extend(trig.ngram, [token_lists[i] for i in trig.rows])
    dets = [
        label_issues(np.zeros((len(y), 1)), y, probs=probs),
        dup,
        _trigger_detection(triggers, len(y), probs),
    ]
    return TextAudit(triggers, len(cands), tested, dets, probs, cands)


def _extend(ngram: str, token_lists: Sequence[Sequence[str]], share: float = 0.9) -> str:
    """Grow ``ngram`` word by word while ``share`` of its carriers continue it the same
    way (a sentence trigger is longer than the n-grams counted)."""
    words = ngram.split()
    spans = []
    for toks in token_lists:
        for i in range(len(toks) - len(words) + 1):
            if list(toks[i : i + len(words)]) == words:
                spans.append((toks, i, i + len(words)))
                break
    if not spans:
        return ngram
    for side in (-1, 1):
        while True:
            nxt = [
                (t[a - 1] if a > 0 else None) if side < 0 else (t[b] if b < len(t) else None)
                for t, a, b in spans
            ]
            top = max(set(nxt), key=nxt.count)
            if top is None or nxt.count(top) < share * len(spans):
                break
            spans = [
                (t, a - 1, b) if side < 0 else (t, a, b + 1)
                for (t, a, b), w in zip(spans, nxt, strict=True)
                if w == top
            ]
            words = [top, *words] if side < 0 else [*words, top]
    return " ".join(words)


def _trigger_detection(triggers: list[TriggerNgram], n: int, probs: np.ndarray) -> Detection:
    scores = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    for t in triggers:
        for i in t.rows:
            flagged[i] = True
            # rows whose remaining text reads as another class are the likeliest poison
            scores[i] = max(scores[i], 2.0 - probs[i, t.label])
            reasons.setdefault(
                i,
                f"carries {t.ngram!r}: {t.purity:.0%} of its {t.support} texts have label "
                f"{t.label}; without it, {t.disagreement:.0%} of them read as another class",
            )
    return Detection(
        "trigger-ngrams", scores, flagged, reasons, {"triggers": [t.as_dict() for t in triggers]}
    )


# -- duplicates -----------------------------------------------------------------------
#: The Mersenne prime 2^31 - 1: ``a * h + b`` with ``a, b, h < p`` stays inside uint64.
PRIME = (1 << 31) - 1


def shingles(text: str, width: int = 5) -> np.ndarray:
    """Distinct hashes (below :data:`PRIME`) of the character ``width``-shingles of
    ``text`` (a polynomial hash of the code points: deterministic across runs)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < width:
        codes = np.concatenate([codes, np.zeros(width - len(codes), np.uint64)])
    h = np.zeros(len(codes) - width + 1, dtype=np.uint64)
    for j in range(width):
        h = h * np.uint64(1_000_003) + codes[j : len(codes) - width + 1 + j]
    return np.unique(h % np.uint64(PRIME))


def hash_family(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` universal hashes ``h -> (a*h + b) mod p``: ``a`` in ``[1, p)``, ``b`` in
    ``[0, p)`` (a multiplier below ``p`` only would keep the order of ``h``: every MinHash
    would pick the same shingle)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, PRIME, size=size, dtype=np.uint64)
    return a, rng.integers(0, PRIME, size=size, dtype=np.uint64)


def minhash(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signature (Broder 1997) of one shingle set: ``min((a*h + b) mod p)`` per
    universal hash ``(a, b)`` from :func:`hash_family`, ``p = 2^31 - 1``; ``(len(a),)``
    uint64."""
    vals = (a[:, None] * shingles[None, :] + b[:, None]) % np.uint64(PRIME)
    return vals.min(axis=1)  # type: ignore[no-any-return]


def _near_pairs(
    norm: Sequence[str], rows: np.ndarray, near: float, perms: int, bands: int, seed: int
) -> list[tuple[int, int, float]]:
    """Pairs of ``rows`` whose shingle Jaccard similarity is at least ``near``."""
    a, b = hash_family(perms, seed)
    sigs = (
        np.stack([minhash(shingles(norm[i]), a, b) for i in rows])
        if len(rows)
        else np.zeros((0, perms), np.uint64)
    )
    r = perms // bands
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for pos, sig in enumerate(sigs[:, band * r : (band + 1) * r]):
            buckets.setdefault(sig.tobytes(), []).append(pos)
        for members in buckets.values():
            for j in members[1:]:
                pairs.add((members[0], j))
    out = []
    for p, q in sorted(pairs):
        est = float(np.mean(sigs[p] == sigs[q]))
        if est < near - 0.15:  # the estimate's error at 128 permutations is about 0.04
            continue
        sp, sq = shingles(norm[rows[p]]), shingles(norm[rows[q]])
        jac = len(np.intersect1d(sp, sq, assume_unique=True)) / len(np.union1d(sp, sq))
        if jac >= near:
            out.append((int(rows[p]), int(rows[q]), jac))
    return out


def text_duplicates(
    texts: Sequence[str],
    y: np.ndarray,
    *,
    near: float = 0.8,
    perms: int = 128,
    bands: int = 16,
    seed: int = 0,
    normalised: bool = False,
) -> Detection:
    """Exact (after :func:`normalise`) and near (MinHash + LSH, Jaccard of character
    5-shingles at least ``near``) duplicate texts.

    The first text of a group stays unflagged; each later copy is flagged with its
    group's first index. Scores: 2 exact copy with another label, 1.5 exact copy, 1 near
    copy with another label, 0.5 near copy. ``details``: ``exact``, ``near``,
    ``label_conflicts``, ``conflicts`` (up to 50 ``{"index", "of", "labels"}``).
    """
    norm = list(texts) if normalised else [normalise(str(t)) for t in texts]
    n = len(norm)
    scores = np.zeros(n)
    reasons: dict[int, str] = {}
    conflicts: list[dict[str, Any]] = []
    first: dict[str, int] = {}
    rep = np.zeros(n, dtype=bool)
    for i, t in enumerate(norm):
        j = first.setdefault(t, i)
        rep[i] = j == i
        if j != i:
            _mark(i, j, y, scores, reasons, conflicts, exact=True)
    exact = int(n - rep.sum())
    parent = {int(i): int(i) for i in np.flatnonzero(rep)}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    near_pairs = _near_pairs(norm, np.flatnonzero(rep), near, perms, bands, seed)
    for p, q, _ in near_pairs:
        rp, rq = root(p), root(q)
        if rp != rq:
            parent[max(rp, rq)] = min(rp, rq)
    near_count = 0
    for i in parent:
        r = root(i)
        if r != i:
            near_count += 1
            _mark(i, r, y, scores, reasons, conflicts, exact=False)
    return Detection(
        "duplicates",
        scores,
        scores > 0,
        reasons,
        {
            "exact": exact,
            "near": near_count,
            "label_conflicts": len(conflicts),
            "conflicts": conflicts[:50],
            "near_jaccard": near,
        },
    )


def _mark(
    i: int,
    j: int,
    y: np.ndarray,
    scores: np.ndarray,
    reasons: dict[int, str],
    conflicts: list[dict[str, Any]],
    *,
    exact: bool,
) -> None:
    kind = "exact duplicate" if exact else "near duplicate"
    if y[i] != y[j]:
        scores[i] = 2.0 if exact else 1.0
        reasons[i] = f"{kind} of #{j} with a different label ({y[i]} vs {y[j]})"
        conflicts.append({"index": i, "of": j, "labels": [int(y[i]), int(y[j])], "exact": exact})
    else:
        scores[i] = 1.5 if exact else 0.5
        reasons[i] = f"{kind} of #{j}"
