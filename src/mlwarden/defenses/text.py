"""Input normalisation for text models, and its honest (adaptive) evaluation.

Steps (each a ``str -> str`` function; :func:`normaliser` chains them):

* ``nfkc`` — Unicode NFKC (full-width letters, ligatures, compatibility forms);
* ``strip_invisible`` — remove format characters (Unicode category ``Cf``: zero-width
  space/joiners, word joiner, soft hyphen, bidi controls) and other invisibles;
* ``fold_homoglyphs`` — Cyrillic/Greek letters drawn like Latin ones become Latin
  (Unicode confusables, the subset that occurs in attacks on Latin-script text);
* ``spelling`` — a word outside the model's own vocabulary becomes the in-vocabulary
  word one edit away (optimal string alignment), when exactly one is the most frequent.

The character steps are the restoration of the ``text`` row of
:mod:`mlwarden.core.modality`; :class:`NormalisedTextTarget` puts them in front of any
text target (as the gateway does). :func:`adaptive_figures` reports robust accuracy
twice: against adversarial texts made on the bare model (non-adaptive: the usual,
flattering figure) and against an attack on the defended model that knows the
normalisation (adaptive: it does not waste queries on edits the defence undoes;
Athalye et al. 2018, arXiv:1802.00420, on why only the adaptive figure counts).

Example::

    clean = normaliser()("gr\\u200beat f\\u0456lm")      # "great film"
    defended = NormalisedTextTarget(target)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from mlwarden.core.errors import UserError
from mlwarden.core.text_target import TextTarget

#: Look-alikes folded to Latin (Cyrillic, Greek, a few symbols).
CONFUSABLES = str.maketrans({
    "\u0430": "a", "\u0441": "c", "\u0435": "e", "\u0456": "i", "\u0458": "j",
    "\u043e": "o", "\u0440": "p", "\u0455": "s", "\u0445": "x", "\u0443": "y",
    "\u04bb": "h", "\u0501": "d", "\u051b": "q", "\u051d": "w", "\u0261": "g",
    "\u0410": "A", "\u0412": "B", "\u0421": "C", "\u0415": "E", "\u041d": "H",
    "\u0406": "I", "\u0408": "J", "\u041a": "K", "\u041c": "M", "\u041e": "O",
    "\u0420": "P", "\u0405": "S", "\u0422": "T", "\u0425": "X", "\u0423": "Y",
    "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H",
    "\u0399": "I", "\u039a": "K", "\u039c": "M", "\u039d": "N", "\u039f": "O",
    "\u03a1": "P", "\u03a4": "T", "\u03a5": "Y", "\u03a7": "X", "\u03bf": "o",
    "\u03b1": "a", "\u03bd": "v", "\u0131": "i",
})  # fmt: skip
_INVISIBLE_EXTRA = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u180e"}
STEPS = ("nfkc", "strip_invisible", "fold_homoglyphs", "spelling")


def nfkc(text: str) -> str:
    """Unicode NFKC normal form."""
    return unicodedata.normalize("NFKC", text)


def strip_invisible(text: str) -> str:
    """Drop format (``Cf``) characters and Hangul fillers; keep ordinary whitespace."""
    return "".join(
        ch for ch in text if unicodedata.category(ch) != "Cf" and ch not in _INVISIBLE_EXTRA
    )


def fold_homoglyphs(text: str) -> str:
    """Cyrillic/Greek look-alikes of Latin letters become the Latin letters."""
    return text.translate(CONFUSABLES)


class SpellingCorrector:
    """Map an out-of-vocabulary word to the single in-vocabulary word one edit away.

    ``vocabulary``: the model's own words (a vectorizer's ``vocabulary_``, a
    tokenizer's whole-word tokens). Symmetric-delete index: O(len(word)) look-ups.
    """

    def __init__(self, vocabulary: Iterable[str]) -> None:
        self.vocab = {w.lower() for w in vocabulary if w.isalpha()}
        self.index: dict[str, set[str]] = {}
        for w in self.vocab:
            for d in self._deletes(w):
                self.index.setdefault(d, set()).add(w)

    @staticmethod
    def _deletes(w: str) -> set[str]:
        return {w, *(w[:i] + w[i + 1 :] for i in range(len(w)))}

    def correct_word(self, word: str) -> str:
        core = word.strip(".,!?;:'\"()")
        low = core.lower()
        if not low.isalpha() or low in self.vocab or len(low) < 3:
            return word
        from mlwarden.evasion.text.threat import edit_distance

        found = {v for d in self._deletes(low) for v in self.index.get(d, ())}
        near = sorted(v for v in found if edit_distance(low, v, 2) <= 1)
        if len(near) != 1:
            return word
        return word.replace(core, near[0])

    def __call__(self, text: str) -> str:
        return " ".join(self.correct_word(w) for w in text.split(" "))


def normaliser(
    steps: Sequence[str] = ("nfkc", "strip_invisible", "fold_homoglyphs"),
    vocabulary: Iterable[str] | None = None,
) -> Callable[[str], str]:
    """The chain of ``steps`` as one function (``spelling`` needs ``vocabulary``)."""
    table: dict[str, Callable[[str], str]] = {
        "nfkc": nfkc,
        "strip_invisible": strip_invisible,
        "fold_homoglyphs": fold_homoglyphs,
    }
    funcs: list[Callable[[str], str]] = []
    for step in steps:
        if step == "spelling":
            if vocabulary is None:
                raise UserError("the spelling step needs the model's vocabulary")
            funcs.append(SpellingCorrector(vocabulary))
        elif step in table:
            funcs.append(table[step])
        else:
            raise UserError(f"unknown normalisation step {step!r}; known: {', '.join(STEPS)}")

    def run(text: str) -> str:
        for f in funcs:
            text = f(text)
        return text

    return run


def model_vocabulary(target: Any) -> list[str] | None:
    """The words a text model knows: a pipeline's word-vectorizer vocabulary or a
    tokenizer's whole-word tokens; ``None`` when the model does not expose one (or its
    vectorizer counts character n-grams)."""
    est = getattr(target, "estimator", None)
    first = est.steps[0][1] if est is not None and hasattr(est, "steps") else est
    vocab = getattr(first, "vocabulary_", None)
    if getattr(first, "analyzer", "word") != "word":
        return None  # character n-grams are not words
    if vocab is not None:
        return [w for w in vocab if " " not in w]
    tok = getattr(target, "tokenizer", None)
    if tok is not None:
        return [w for w in tok.get_vocab() if w.isalpha()]
    return None


class NormalisedTextTarget(TextTarget):
    """A text target behind :func:`normaliser` (the deployed defence); same access."""

    def __init__(self, inner: TextTarget, steps: Sequence[str] | None = None, **kw: Any) -> None:
        if steps is None:
            steps = ("nfkc", "strip_invisible", "fold_homoglyphs")
        kw.setdefault("name", f"{inner.name}+normalise")
        kw.setdefault("access", "score" if inner.access == "white" else inner.access)
        kw.setdefault("output", inner.output)
        kw.setdefault("num_classes", inner.num_classes)
        kw.setdefault("batch_size", inner.batch_size)
        super().__init__(**kw)
        self.inner = inner
        self.steps = tuple(steps)
        self.normalise = normaliser(self.steps, model_vocabulary(inner))

    def _predict_texts(self, texts: list[str]) -> np.ndarray:
        return self.inner.predict([self.normalise(t) for t in texts])

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"defence": list(self.steps)}


def adaptive_figures(
    target: TextTarget,
    defended: NormalisedTextTarget,
    adversarial: Any,
    texts: Any,
    labels: Any,
    threat: Any,
) -> dict[str, float]:
    """Robust accuracy of the defended model against non-adaptive and adaptive attacks.

    ``adversarial``: the attack result on the bare ``target`` (its successful texts are
    replayed through the defence); the adaptive attack runs on ``defended`` with the
    normalisation known to it.
    """
    from mlwarden.evasion.text.attack import attack_texts

    y = np.asarray(labels)
    replay = defended.predict_labels(list(adversarial.adversarial))
    clean_def = defended.predict_labels(list(texts))
    non_adaptive = float(np.mean((clean_def == y) & (replay == y)))
    adaptive = attack_texts(defended, list(texts), y, threat=threat, knows=defended.normalise)
    return {
        "clean_accuracy": float(np.mean(clean_def == y)),
        "robust_accuracy_non_adaptive": non_adaptive,
        "robust_accuracy_adaptive": adaptive.robust_accuracy,
        "queries_median_adaptive": adaptive.queries_median,
    }
