"""STRIP on text: texts that keep their prediction whatever words surround them.

STRIP (Gao et al. 2019, arXiv:1902.06531) superimposes an input on clean inputs and
measures the entropy of the predictions: a trojaned input keeps the target class, so
its entropy is low. STRIP-ViTA (Gao et al. 2020, "Design and Evaluation of a
Multi-Domain Trojan Detection Method on Deep Neural Networks", arXiv:1911.10312)
carries it to text by word-level superimposition: each perturbed copy replaces a
share of the input's words with words drawn from other texts. A trigger word or
sentence survives most copies and holds the prediction; a clean text's prediction
drifts with the words it receives.

:func:`strip_texts` screens a training set without held-out clean data, as
:func:`mlwarden.poisoning.detect_model.strip_in_data` does for arrays: the normal
STRIP fits to clean entropies is fitted robustly to the data's own, and low-entropy
texts are flagged only in the one class that holds far more of them than any other.

Example::

    det = strip_texts(as_text_target(pipe), list(ds.x), ds.y)
    np.flatnonzero(det.flagged)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError
from mlwarden.poisoning.detect_data import Detection


def superimpose(
    text: str, donors: Sequence[Sequence[str]], rate: float, rng: np.random.Generator
) -> list[str]:
    """One copy of ``text`` per donor word list. ``rate`` in (0, 1): each of its words
    replaced, with that probability, by a random word of the donor (STRIP-ViTA's text
    perturbation); ``rate`` 1: the donor's words merged in between the text's at random
    (a full-weight overlay, as STRIP adds images: every word of the input kept)."""
    words = text.split()
    out = []
    for donor in donors:
        if not donor or not words:
            out.append(text)
        elif rate >= 1.0:
            merged = np.array([*words, *donor], dtype=object)
            keys = np.concatenate(
                [np.sort(rng.random(len(words))), np.sort(rng.random(len(donor)))]
            )
            out.append(" ".join(merged[np.argsort(keys, kind="stable")]))
        else:
            swap = rng.random(len(words)) < rate
            picks = rng.integers(0, len(donor), size=len(words))
            out.append(
                " ".join(donor[p] if s else w for w, s, p in zip(words, swap, picks, strict=True))
            )
    return out


def text_entropy(
    target: Any,
    texts: Sequence[str],
    pool: Sequence[str],
    *,
    n: int = 20,
    rate: float = 1.0,
    seed: int = 0,
    batch: int = 50,
    votes: bool = True,
) -> np.ndarray:
    """Mean prediction entropy (bits) of each text over ``n`` superimposed copies
    (:func:`superimpose` with words of random ``pool`` texts): of the copies' label
    votes (``votes``, and always for a label-only target), else of the scores."""
    from mlwarden.poisoning.text_backdoor import _probs

    if not pool:
        raise UserError("STRIP on text needs other texts to take words from")
    rng = np.random.default_rng(seed)
    donors = [t.split() for t in pool]
    out = np.empty(len(texts))
    for s in range(0, len(texts), batch):
        chunk = texts[s : s + batch]
        copies = [
            c
            for t in chunk
            for c in superimpose(t, [donors[j] for j in rng.integers(0, len(donors), n)], rate, rng)
        ]
        p = _probs(target, copies).reshape(len(chunk), n, -1)
        if votes or getattr(target, "access", None) == "label":
            p = np.eye(p.shape[2])[p.argmax(axis=2)].mean(axis=1, keepdims=True)
        out[s : s + len(chunk)] = (-(p * np.log2(np.clip(p, 1e-12, 1.0))).sum(axis=2)).mean(axis=1)
    return out


def strip_texts(
    target: Any,
    texts: Sequence[str],
    y: np.ndarray,
    *,
    n: int = 20,
    rate: float = 1.0,
    frr: float = 0.01,
    max_samples: int = 3000,
    seed: int = 0,
) -> Detection:
    """STRIP-ViTA over a labelled text set (queries only): each of at most
    ``max_samples`` texts (a random subset beyond) superimposed ``n`` times
    (:func:`superimpose` at ``rate``: by default every word kept and a whole other text
    merged in, since replacing words also removes the trigger half the time; the vote
    entropy, since a linear model's soft scores stay uncertain); flags as in
    :func:`mlwarden.poisoning.detect_model.low_entropy_flags` at ``frr``."""
    from mlwarden.poisoning.detect_model import strip_detection, strip_screen

    y = np.asarray(y, dtype=np.int64)
    screened, pool_idx = strip_screen(len(texts), max_samples, np.random.default_rng(seed))
    pool = [str(texts[i]) for i in pool_idx]
    h = np.full(len(texts), np.nan)
    h[screened] = text_entropy(
        target, [str(texts[i]) for i in screened], pool, n=n, rate=rate, seed=seed
    )
    return strip_detection(
        "strip-text", h, y, screened, frr=frr, copies=n, replace_rate=rate,
        reason=lambda e, thr: (
            f"STRIP (text): keeps its prediction when overlaid with words of other "
            f"texts (label-vote entropy {e:.2f} bits, below the {frr:.0%} threshold "
            f"{thr:.2f}), as texts carrying a trigger do"
        ),
    )  # fmt: skip
