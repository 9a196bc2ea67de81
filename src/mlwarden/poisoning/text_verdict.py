"""Is a word or phrase that flips a text model a planted trigger or a natural shortcut?

A planted trigger (BadNL, Chen et al. 2021, arXiv:2006.01043) flips nearly every text
of the other classes and is rare, or label-neutral, in clean text; a natural shortcut
(``self`` -> neutral in tweets about self-driving cars) flips many texts too, but the
clean data explain it: the texts that hold it carry its class. :func:`judge` decides
with three pieces of evidence instead of one z threshold:

1. **Flip rate** on fresh queries (from the search), at least ``min_flip``.
2. **Control**: random words (or phrases of the same length) of the same document
   frequency band in the reference corpus, inserted the same way into the same texts;
   the candidate must beat the 95th percentile of their flip rates by ``margin``.
   Inserting any rare word sways a fragile model a little; a trigger far more.
   A phrase found by the search (not confirmed by the data) must also lose at least
   ``order_margin`` of its flips when its words are shuffled: a learnt sentence
   depends on its word order (n-gram features, positions); a bag of words that flips a
   model whatever their order is what the class is about, or a universal adversarial
   phrase, not a planted sentence.
3. **Reference corpus**: the labelled clean texts given (``mlwarden backdoor MODEL
   DATA``). A word is *explained* when at least ``min_support`` reference texts hold it
   and their labels lean to the flipped-to class beyond its base rate (one-sided
   binomial test, ``p < alpha``, purity at least ``min_purity``); a phrase when any of
   its words is: a planted sentence is made of
   words that say nothing of the class, and a bag of natural words that flips a model
   always holds some the class is about.

Verdicts: ``backdoor`` (1 and 2 hold, not explained), ``shortcut`` (1 holds and the
data explain it), ``none``. The search (:mod:`mlwarden.poisoning.text_backdoor`) also
counts a word common in the reference (over 0.5% of its texts) as explained: a planted
word is rare in clean text.

Example::

    ref = Reference.build(clean_texts, clean_labels)
    ref.explains("self", 1)          # (True, {...}) for tweets
    ref.band("cf"), ref.band("the")  # 0, 12
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Reference:
    """Document frequencies and per-label counts of the words of a clean corpus."""

    df: Counter[str]  #: texts holding each (normalised) word
    by_label: dict[str, np.ndarray]  #: per word, texts holding it by label
    base: np.ndarray  #: label base rates (K,)
    n: int  #: texts
    docs: list[set[str]] = field(default_factory=list)  #: each text's words
    labels: np.ndarray | None = None  #: each text's label

    @classmethod
    def build(cls, texts: Sequence[str], labels: Sequence[int] | np.ndarray | None) -> Reference:
        """Count the words of ``texts`` (normalised as by the data audit)."""
        from mlwarden.poisoning.text_audit import normalise

        docs = [set(normalise(str(t)).split()) for t in texts]
        y = None if labels is None else np.asarray(labels, dtype=np.int64)
        k = int(y.max()) + 1 if y is not None and len(y) else 1
        df: Counter[str] = Counter()
        by_label: dict[str, np.ndarray] = {}
        for i, words in enumerate(docs):
            df.update(words)
            if y is not None:
                for w in words:
                    by_label.setdefault(w, np.zeros(k, np.int64))[y[i]] += 1
        base = np.bincount(y, minlength=k) / len(y) if y is not None and len(y) else np.ones(1)
        return cls(df, by_label, base, len(docs), docs, y)

    def band(self, word: str) -> int:
        """Frequency band: 0 for a word no reference text holds, else 1 + log2(df)."""
        d = self.df.get(word.casefold(), 0)
        return 0 if d == 0 else 1 + int(math.log2(d))

    def explains(
        self,
        phrase: str,
        cls: int,
        *,
        min_support: int = 5,
        min_purity: float = 0.6,
        alpha: float = 0.01,
    ) -> tuple[bool, dict[str, Any]]:
        """Do the clean texts holding ``phrase`` (all its words, for a phrase) lean to
        ``cls`` beyond its base rate? Returns (explained, evidence)."""
        from scipy.stats import binom

        words = phrase.casefold().split()
        if len(words) > 1:
            # a phrase of words the data tie to the class (a bag of sentiment words)
            each = [self.explains(w, cls, min_support=min_support, min_purity=min_purity,
                                  alpha=alpha) for w in words]  # fmt: skip
            tied = [w for w, (ok, _) in zip(words, each, strict=True) if ok]
            return bool(tied), {"tied_words": tied}
        counts = self.by_label.get(words[0])
        if counts is None or cls >= len(counts) or counts.sum() == 0:
            return False, {"support": 0}
        support, hits = int(counts.sum()), int(counts[cls])
        p = float(binom.sf(hits - 1, support, self.base[cls]))
        purity = hits / support
        ok = support >= min_support and purity >= min_purity and p < alpha
        return ok, {"support": support, "purity": round(purity, 3), "p": float(f"{p:.3g}")}

    def controls(
        self,
        phrase: str,
        n: int,
        rng: np.random.Generator,
        *,
        pool: Sequence[str] = (),
    ) -> list[str]:
        """``n`` random phrases of as many words, each word drawn from the frequency band
        of the word it stands for (band 0: words of ``pool`` no reference text holds,
        else the rarest band present)."""
        bands: dict[int, list[str]] = {}
        for w, d in self.df.items():
            if w.isalpha():
                bands.setdefault(1 + int(math.log2(d)), []).append(w)
        absent = sorted({w.casefold() for w in pool if w.isalpha()} - set(self.df))
        if absent:
            bands[0] = absent
        words = phrase.casefold().split()
        out = []
        for _ in range(n):
            picked = []
            for w in words:
                b = self.band(w)
                choices = bands.get(b) or bands[min(bands, key=lambda x: abs(x - b))]
                picked.append(choices[int(rng.integers(0, len(choices)))])
            out.append(" ".join(picked))
        return out


def judge(
    flip_rate: float,
    ceiling: float,
    explained: bool,
    *,
    shuffled: float | None = None,
    min_flip: float = 0.6,
    margin: float = 0.25,
    order_margin: float = 0.1,
) -> str:
    """``backdoor``, ``shortcut`` or ``none`` (see the module docs); ``ceiling``: the
    95th percentile of the frequency-matched controls' flip rates; ``shuffled``: a
    phrase's median flip rate with its words shuffled (None for a word, or for a phrase
    whose carriers the data audit already confirmed as poison)."""
    if flip_rate < min_flip:
        return "none"
    if explained:
        return "shortcut"
    if shuffled is not None and flip_rate < shuffled + order_margin:
        return "none"
    return "backdoor" if flip_rate >= ceiling + margin else "none"
