"""The text threat model: the one place that decides whether an adversarial text counts.

A text is split into words on whitespace (``str.split``). An adversarial text is
*valid* against its original when:

* it has exactly the same number of words (none inserted or deleted);
* at most ``max(int(r * n), 1)`` of the ``n`` words differ (``r`` = ``max_change``);
* every changed word either shares a WordNet synset with the original word (any sense,
  inflected forms included; punctuation around the word unchanged, case ignored), or
  is within a character edit distance of ``max_edit`` (default 2) of it —
  optimal-string-alignment distance, so an adjacent swap is one edit, and a homoglyph or
  an invisible character is one edit like any other character.

An attack may search with looser candidates, but reports only texts that pass
:meth:`ThreatModel.check` and that a fresh query still misclassifies.

Example::

    tm = ThreatModel(max_change=0.2)
    tm.check("the film was great fun", "the movie was great fun")   # Verdict(ok=True, ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_EDGE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)


def words(text: str) -> list[str]:
    """The words of ``text`` as the threat model counts them (whitespace-separated)."""
    return text.split()


def edit_distance(a: str, b: str, cap: int = 3) -> int:
    """Optimal string alignment distance (insert, delete, substitute, adjacent swap),
    returning ``cap`` as soon as it is certain the distance is at least ``cap``."""
    if a == b:
        return 0
    if abs(len(a) - len(b)) >= cap:
        return cap
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) >= cap:
            return cap
        prev2, prev = prev, cur
    return min(prev[-1], cap)


def _split_edges(word: str) -> tuple[str, str, str]:
    m = _EDGE.match(word)
    assert m is not None  # the pattern matches every string
    return m.group(1), m.group(2), m.group(3)


@dataclass
class Verdict:
    """Whether an adversarial text is valid, and why not."""

    ok: bool
    changed: list[int] = field(default_factory=list)
    reason: str = ""


@dataclass(frozen=True)
class ThreatModel:
    """The constraints every reported text attack satisfies (see the module docs)."""

    max_change: float = 0.2
    max_edit: int = 2

    def __post_init__(self) -> None:
        from mlwarden.core.errors import UserError

        if not 0 < self.max_change <= 1:
            raise UserError(f"max_change must be in (0, 1]; got {self.max_change}")
        if self.max_edit < 0:
            raise UserError(f"max_edit must be >= 0; got {self.max_edit}")

    def budget(self, n_words: int) -> int:
        """How many of ``n_words`` words may change: ``max(int(r * n), 1)``."""
        return max(int(self.max_change * n_words), 1)

    def word_ok(self, old: str, new: str) -> bool:
        """A single word substitution allowed by the threat model."""
        if old == new:
            return True
        if edit_distance(old, new, self.max_edit + 1) <= self.max_edit:
            return True
        (pre_a, core_a, post_a), (pre_b, core_b, post_b) = _split_edges(old), _split_edges(new)
        if (pre_a, post_a) != (pre_b, post_b) or not core_a or not core_b:
            return False
        if not (core_b.isascii() and core_b.replace("'", "").isalpha()):
            return False
        from mlwarden.evasion.text.wordnet import share_synset

        return share_synset(core_a, core_b)

    def check(self, original: str, adversarial: str) -> Verdict:
        """Validate ``adversarial`` against ``original`` (no model query)."""
        a, b = words(original), words(adversarial)
        if len(a) != len(b):
            return Verdict(False, reason=f"word count changed from {len(a)} to {len(b)}")
        changed = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(changed) > self.budget(len(a)):
            return Verdict(
                False,
                changed,
                f"{len(changed)} words changed, over the budget of {self.budget(len(a))}",
            )
        for i in changed:
            if not self.word_ok(a[i], b[i]):
                return Verdict(
                    False,
                    changed,
                    f"word {i} {a[i]!r} -> {b[i]!r} is neither a WordNet synonym nor within {self.max_edit} character edits",
                )
        return Verdict(True, changed)

    def describe(self) -> dict[str, Any]:
        return {
            "words": "whitespace-separated; none inserted or deleted",
            "max_change": self.max_change,
            "words_changed_at_most": "max(int(max_change * n), 1)",
            "substitution": "shares a WordNet 3.0 synset (any sense, inflections included)",
            "character_edits_at_most": self.max_edit,
            "edit_distance": "optimal string alignment (homoglyphs, invisible characters count)",
            "success": "a fresh query misclassifies the adversarial text",
        }
