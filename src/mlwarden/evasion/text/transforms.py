"""Candidate words for a text attack (the "transformation" of a TextAttack-style attack).

* :func:`synonym_candidates` — WordNet synonyms (the PWWS / TextFooler family: Ren et al.
  ACL 2019, "Generating Natural Language Adversarial Examples through Probability
  Weighted Word Saliency"; Jin et al. 2020, arXiv:1907.11932), re-inflected like the
  original word (plural, -ed, -ing, -s), with its case and surrounding punctuation.
* :func:`char_candidates` — character edits (the DeepWordBug family: Gao et al. 2018,
  arXiv:1801.04354: adjacent swap, deletion, insertion, substitution) plus a homoglyph
  (a Cyrillic or Greek letter drawn like a Latin one) and an invisible character
  (zero-width space / joiner, soft hyphen) inside the word.

Candidates may be looser than the threat model; :class:`ThreatModel` filters them.

Example::

    synonym_candidates("movies,")     # ('films,', 'pictures,', ...)
    char_candidates("terrible")       # ('tetrible', 'terrbile', 'terible', ...)
"""

from __future__ import annotations

import re

from mlwarden.evasion.text.wordnet import synonyms

#: Latin letters and a look-alike from another script (same glyph in common fonts).
HOMOGLYPHS = {
    "a": "\u0430", "c": "\u0441", "e": "\u0435", "i": "\u0456", "j": "\u0458",
    "o": "\u043e", "p": "\u0440", "s": "\u0455", "x": "\u0445", "y": "\u0443",
    "A": "\u0391", "B": "\u0392", "C": "\u0421", "E": "\u0395", "H": "\u0397",
    "I": "\u0399", "K": "\u039a", "M": "\u039c", "N": "\u039d", "O": "\u039f",
    "P": "\u03a1", "T": "\u03a4", "X": "\u03a7", "Y": "\u03a5", "Z": "\u0396",
}  # fmt: skip
#: Characters that render as nothing (and are not whitespace to ``str.split``).
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\u00ad")
_KEYBOARD = {
    "a": "s", "b": "v", "c": "x", "d": "s", "e": "w", "f": "d", "g": "f", "h": "g",
    "i": "u", "j": "h", "k": "j", "l": "k", "m": "n", "n": "b", "o": "i", "p": "o",
    "q": "w", "r": "e", "s": "a", "t": "r", "u": "y", "v": "c", "w": "q", "x": "z",
    "y": "t", "z": "x",
}  # fmt: skip
_EDGE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)


def _split(word: str) -> tuple[str, str, str]:
    m = _EDGE.match(word)
    assert m is not None
    return m.group(1), m.group(2), m.group(3)


def _inflect(base: str, word: str, lemma: str) -> str:
    """Give ``base`` the suffix that turns ``lemma`` into ``word`` (a heuristic; the
    threat model checks the result)."""
    if word == lemma:
        return base
    if word.endswith("ies") and lemma.endswith("y"):
        return base[:-1] + "ies" if base.endswith("y") else base + "s"
    if word.endswith("ing"):
        return (base[:-1] if base.endswith("e") else base) + "ing"
    if word.endswith("ed"):
        return base + ("d" if base.endswith("e") else "ed")
    if word.endswith("es") and not lemma.endswith("e"):
        return base + ("es" if base.endswith(("s", "x", "z", "ch", "sh")) else "s")
    if word.endswith("s"):
        return base + "s"
    return base


def _case_like(new: str, old: str) -> str:
    if old.isupper() and len(old) > 1:
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def synonym_candidates(word: str, limit: int | None = None) -> list[str]:
    """WordNet synonyms of ``word`` shaped like it (inflection, case, punctuation)."""
    pre, core, post = _split(word)
    if not core.isalpha() or not core.isascii():
        return []
    from mlwarden.evasion.text.wordnet import lemmas

    low = core.lower()
    bases = sorted({form for form, _ in lemmas(low)}, key=lambda f: (f != low, f))
    lemma = bases[-1] if bases else low
    out: dict[str, None] = {}
    for syn in synonyms(low):
        form = _inflect(syn, low, lemma) if lemma != low else syn
        cand = pre + _case_like(form, core) + post
        if cand != word:
            out.setdefault(cand, None)
        if limit is not None and len(out) >= limit:
            break
    return list(out)


def embedding_candidates(word: str) -> list[str]:
    """GloVe neighbours of ``word`` (TextFooler's candidates), nearest first, shaped like it
    (case, punctuation); the threat model still vets each before it is queried."""
    pre, core, post = _split(word)
    if not core.isalpha() or not core.isascii():
        return []
    from mlwarden.evasion.text.embeddings import neighbours

    out = (pre + _case_like(n, core) + post for n in neighbours(core.lower()))
    return list(dict.fromkeys(c for c in out if c != word))


def char_candidates(word: str) -> list[str]:
    """One-edit variants of ``word``: swap, delete, insert, substitute (DeepWordBug),
    a homoglyph and an invisible character, at the middle of the word's letters."""
    pre, core, post = _split(word)
    if len(core) < 2:
        return []
    mid = len(core) // 2
    out: dict[str, None] = {}

    def add(c: str) -> None:
        if c and c != core:
            out.setdefault(pre + c + post, None)

    # most effective first (callers may keep only the first few): a homoglyph and an
    # invisible character change the token for most tokenizers; then DeepWordBug's four
    for pos in sorted(range(len(core)), key=lambda p: abs(p - mid)):
        if core[pos] in HOMOGLYPHS:
            add(core[:pos] + HOMOGLYPHS[core[pos]] + core[pos + 1 :])
            break
    add(core[:mid] + INVISIBLE[0] + core[mid:])
    add(core[: mid - 1] + core[mid] + core[mid - 1] + core[mid + 1 :])  # swap
    add(core[:mid] + core[mid + 1 :])  # delete
    lower = core[mid].lower()
    add(core[:mid] + _KEYBOARD.get(lower, "x") + core[mid + 1 :])  # substitute (keyboard)
    add(core[:mid] + core[mid] + core[mid:])  # insert (doubled letter)
    return list(out)
