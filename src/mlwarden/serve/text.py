"""Text through the gateway (``input: {modality: text}``).

* :func:`parse_text_inputs` — the request body must be UTF-8 JSON
  ``{"inputs": ["text", ...]}``: 1 to ``max_batch`` texts, each a non-empty string of
  at most ``max_chars`` characters holding valid Unicode (no unpaired surrogates from
  ``\\ud800`` escapes, no noncharacters, no control characters other than tab and
  newlines). Anything else is 422 with one line saying what was wrong.
* :func:`text_restoration` — ``restoration: [{type: nfkc}, {type: strip_invisible},
  {type: fold_homoglyphs}, {type: spelling}]``: the normalisation chain of
  :mod:`mlwarden.defenses.text` in front of the model (``spelling`` corrects against
  the model's own vocabulary).
* :func:`text_features` — what the stream detectors see of a text: a 1-bit MinHash
  (Li & König 2010, "b-Bit Minwise Hashing", arXiv:0910.3349) of its character
  5-shingles, scaled so that the similarity detector's ``radius`` (RMS distance per
  value) falls at a shingle Jaccard similarity of about ``near`` (0.6): the candidate
  texts of a word-substitution or character-edit attack on one text are neighbours of
  each other, distinct texts are not. Shingles are taken from the raw text, so
  homoglyph and invisible-character variants of one text are near, not equal.
* :class:`TypingChain` — a key's texts typed on (each extends the one before, or
  backtracks a few characters): the monitor counts a chain once among a text's
  neighbours, so a moderation check called as someone types is not a search.

Example::

    x = parse_text_inputs(b'{"inputs": ["great film"]}', schema)   # object array of str
    v = text_features(x, dims=128, radius=0.1)                     # (1, 128) float32
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mlwarden.serve.config import InputSchema
from mlwarden.serve.validate import _invalid, batch_list

#: Control characters a text may hold.
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def _check_text(i: int, text: object, max_chars: int) -> str:
    if not isinstance(text, str):
        got = "null" if text is None else type(text).__name__
        raise _invalid(f"input {i} is {got}; a text model takes strings")
    if not text.strip():
        raise _invalid(f"input {i} is empty; expected a non-empty text")
    if len(text) > max_chars:
        raise _invalid(f"input {i} has {len(text)} characters, over the limit of {max_chars}")
    for pos, ch in enumerate(text):
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            raise _invalid(
                f"input {i}, character {pos}: unpaired surrogate; expected valid Unicode"
            )
        if (code & 0xFFFE) == 0xFFFE or 0xFDD0 <= code <= 0xFDEF:
            raise _invalid(f"input {i}, character {pos}: U+{code:04X} is a noncharacter")
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc":
            raise _invalid(
                f"input {i}, character {pos}: control character U+{code:04X}; "
                "only tab and newlines are allowed"
            )
    return text


def parse_text_inputs(body: bytes, schema: InputSchema) -> np.ndarray:
    """The validated texts of a request as a 1-D object array of ``str`` (see module)."""
    try:
        raw = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"body byte {exc.start} is not UTF-8; expected UTF-8 JSON") from None
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise _invalid(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _invalid("body nests too deeply to be a list of texts") from None
    inputs = batch_list(payload, schema.max_batch, "texts", '"text"')
    out = np.empty(len(inputs), dtype=object)
    for i, text in enumerate(inputs):
        out[i] = _check_text(i, text, schema.max_chars)
    return out


def text_restoration(
    spec: Sequence[dict[str, Any]], target: Any
) -> Callable[[np.ndarray], np.ndarray]:
    """The gateway's ``restoration`` list for text as one function on a batch of texts."""
    from mlwarden.core.errors import UserError
    from mlwarden.defenses.text import STEPS, model_vocabulary, normaliser

    steps = []
    for i, entry in enumerate(spec):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind not in STEPS or len(entry) != 1:
            raise UserError(
                f"restoration step #{i + 1} for text must be {{type: NAME}} with NAME one of "
                f"{', '.join(STEPS)}; got {entry!r}"
            )
        steps.append(str(kind))
    vocab = model_vocabulary(target) if "spelling" in steps else None
    if "spelling" in steps and not vocab:
        raise UserError("restoration step 'spelling' needs a model that exposes its vocabulary")
    run = normaliser(steps, vocab)

    def restore(texts: np.ndarray) -> np.ndarray:
        out = np.empty(len(texts), dtype=object)
        out[:] = [run(str(t)) for t in texts]
        return out

    return restore


def minhash_bits(texts: np.ndarray | list[str], dims: int) -> np.ndarray:
    """Each text as ``dims`` values in {0, 1}: the lowest bit of its MinHash values over
    character 5-shingles (the unscaled :func:`text_features`)."""
    from mlwarden.poisoning.text_audit import hash_family, minhash, shingles

    a, b = hash_family(dims, 20100913)  # fixed: features must agree across restarts
    out = np.empty((len(texts), dims), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i] = (minhash(shingles(str(t)), a, b) & np.uint64(1)).astype(np.float32)
    return out


def text_scale(radius: float, near: float) -> float:
    """The value of a set bit that puts the RMS ``radius`` at shingle Jaccard ``near``:
    two texts differ in a bit with probability ``(1 - J) / 2``."""
    return float(radius / np.sqrt((1.0 - near) / 2.0))


def text_features(texts: np.ndarray, dims: int, radius: float, near: float = 0.6) -> np.ndarray:
    """Each text as ``dims`` values in {0, s}: the lowest bit of its MinHash values over
    character 5-shingles, ``s = radius / sqrt((1 - near) / 2)``; see the module docs."""
    return minhash_bits(texts, dims) * np.float32(text_scale(radius, near))


def typo(text: str, rng: np.random.Generator) -> str:
    """``text`` with one character edit in a random word of at least 3 characters: an
    adjacent swap, a deletion, an insertion or a substitution (the edits of DeepWordBug,
    Gao et al. 2018, arXiv:1801.04354). A text without such a word is returned as is."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 3]
    if not long:
        return text
    i = long[int(rng.integers(len(long)))]
    w = words[i]
    j = int(rng.integers(len(w) - 1))
    letter = chr(97 + int(rng.integers(26)))
    edits = (w[:j] + w[j + 1] + w[j] + w[j + 2 :], w[:j] + w[j + 1 :],
             w[:j] + letter + w[j:], w[:j] + letter + w[j + 1 :])  # fmt: skip
    words[i] = edits[int(rng.integers(4))]
    return " ".join(words)


def word_step(current: Sequence[str], original: Sequence[str], limit: int,
              vocabulary: Sequence[str], rng: np.random.Generator) -> list[str]:  # fmt: skip
    """One step of a random word-substitution search: a random vocabulary word at a
    random position of ``current``; when ``limit`` words already differ from
    ``original``, one of them is first restored (the word-level attacks' budget)."""
    cand = list(current)
    changed = [i for i, (a, b) in enumerate(zip(cand, original, strict=True)) if a != b]
    if len(changed) >= limit:
        back = changed[int(rng.integers(len(changed)))]
        cand[back] = original[back]
    cand[int(rng.integers(len(cand)))] = vocabulary[int(rng.integers(len(vocabulary)))]
    return cand


def word_search(text: str, vocabulary: Sequence[str], queries: int, seed: int, *,
                max_changed: float = 0.25, typos: int = 1, accept: float = 0.25) -> list[str]:  # fmt: skip
    """The queries of a model-free random word-substitution search on ``text``.

    Each step puts a random vocabulary word at a random position (at most ``max_changed``
    of the words differ from ``text``, as in the word-level attacks' budgets: a step
    over it first restores one changed word), and each query carries ``typos`` fresh
    character edits (:func:`typo`: the text counterpart of per-query Gaussian noise).
    A step is kept with probability ``accept`` (no model at hand; see
    :mod:`mlwarden.serve.calibrate`). Example: ``word_search("a b c d", ["x"], 10, 0)``.
    """
    rng = np.random.default_rng(seed)
    original = text.split(" ")
    limit = max(1, int(max_changed * len(original)))
    current = list(original)
    out = []
    for _ in range(queries):
        cand = word_step(current, original, limit, vocabulary, rng)
        query = " ".join(cand)
        for _ in range(typos):
            query = typo(query, rng)
        out.append(query)
        if rng.random() < accept:
            current = cand
    return out


#: A backtrack deletes at most this many characters of the previous text (a slip, a word).
TYPING_DELETE = 16
#: A chain may hold ``2 + len(text) // TYPING_PER_BACK`` backtracks: a typist's slips (5%
#: of keys: one in ~25 characters) fit with room; a search's branches beyond it do not.
TYPING_PER_BACK = 12


def typing_step(prev: str | None, text: str) -> int | None:
    """How many characters of ``prev`` ``text`` deletes before it goes on typing: 0 when
    ``prev`` is a prefix of ``text`` (the same text typed further), up to
    :data:`TYPING_DELETE` for a backtrack (a corrected slip); None: not a typing step."""
    if prev is None or prev == text:
        return None
    lcp = len(os.path.commonprefix([prev, text]))
    deleted = len(prev) - lcp
    return deleted if lcp and deleted <= TYPING_DELETE else None


class TypingChain:
    """A key's typing chains: runs of successive texts, each a :func:`typing_step` of the
    one before (a moderation check called as someone types). Growing prefixes are each
    other's neighbours, and a typist sends nothing else; a search needs several
    candidates from one point, which a chain carries only through backtracks. So a
    text that goes on a chain counts each earlier chain once among its neighbours and
    its own not at all (:meth:`mlwarden.serve.monitor.Monitor._typed`); a chain's first
    text, and a backtrack over the chain's budget (``2 + len // TYPING_PER_BACK``
    backtracks), count every neighbour as any query does. Candidates padded into fake
    chains of their own stay each other's neighbours, one chain each."""

    def __init__(self) -> None:
        self.prev: str | None = None
        self.ident = -1  # the current chain's number
        self.backs = 0  # its backtracks

    def step(self, text: str) -> tuple[bool, int]:
        """Whether ``text`` goes on the current chain within its budget, and the chain's
        number (every text, repeats too: a repeat is not analysed but goes on a chain)."""
        deleted = typing_step(self.prev, text)
        self.prev = text
        if deleted is None:
            self.ident, self.backs = self.ident + 1, 0
            return False, self.ident
        self.backs += deleted > 0
        return deleted == 0 or self.backs <= 2 + len(text) // TYPING_PER_BACK, self.ident

    def dump(self) -> dict[str, np.ndarray]:
        """The chain so far (its last text, number and backtracks), to outlive a restart."""
        prev = np.array([] if self.prev is None else [self.prev], dtype=str)
        return {"prev": prev, "meta": np.array([self.ident, self.backs], dtype=np.int64)}

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Take back :meth:`dump`'s chain: the next text goes on as if never restarted."""
        prev, meta = state["prev"], state["meta"]
        self.prev = str(prev[0]) if len(prev) else None
        self.ident, self.backs = int(meta[0]), int(meta[1])
