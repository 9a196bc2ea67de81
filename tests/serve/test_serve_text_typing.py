"""Text typed on: a moderation check called as someone types (session 9, issue 19).

Each query extends the previous one (a growing prefix every 1-4 keys), with a slip now
and then corrected by a backspace. Growing prefixes are each other's neighbours, so the
similarity count and Blacklight flagged such a client (i22e's ``typing``: 263 per 1,000).
:class:`mlwarden.serve.text.TypingChain` leaves a text's own chain out of its count;
searches are still flagged: one inside a chain needs backtracks (one candidate after
another from one point) beyond the chain's budget, and candidates padded into fake
chains of their own stay neighbours across chains.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor
from mlwarden.serve.text import TypingChain, text_features, typing_step, word_search

LABEL = np.zeros(1, dtype=np.int64)
KEYS = "qwertyuiopasdfghjklzxcvbnm"


@pytest.fixture(scope="module")
def tweets() -> list[str]:
    from mlwarden.core.data import load_dataset

    return [str(t) for t in load_dataset("tweets").x]


@pytest.fixture(scope="module")
def vocab(tweets) -> list[str]:
    return sorted({w for t in tweets[:3000] for w in t.split() if w.isalpha()})


def _det() -> Detection:
    # near 0.3 and 20 neighbours: a setting `gateway calibrate` picks on tweets
    return Detection.model_validate({
        "similarity": {"near": 0.3, "min_neighbours": 20},
        "blacklight": {"quantization": 0.1, "threshold": 40}, "prada": {"enabled": False}})  # fmt: skip


def _flags(texts: list[str], typed: bool) -> list[bool]:
    """Each query's alert, one key, the texts handed to the monitor or not."""
    det = _det()
    arr = np.empty(len(texts), dtype=object)
    arr[:] = texts
    f = text_features(arr, det.similarity.max_dims, det.similarity.radius, det.similarity.near)
    mon = Monitor(det, scale=1.0, modality="text")
    return [bool(mon.inspect("k", f[i : i + 1], LABEL, texts=texts[i : i + 1] if typed else None))
            for i in range(len(f))]  # fmt: skip


def _typing(tweets: list[str], n: int, seed: int) -> list[str]:
    """Tweets typed: the prefix every 1-4 keys, a slip (a neighbouring key) on 5% of
    letters sent and then corrected (as benchmarks/gateway_detection_realworld.py)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        t, typed, due = tweets[int(rng.integers(len(tweets)))].strip(), "", int(rng.integers(1, 5))
        for ch in t:
            if rng.random() < 0.05 and ch.isalpha() and len(typed) >= 3:
                j = KEYS.find(ch.lower())
                out.append(typed + KEYS[min(max(j + int(rng.choice([-1, 1])), 0), 25)])
            typed, due = typed + ch, due - 1
            if due <= 0 and len(typed) >= 3:
                out.append(typed)
                due = int(rng.integers(1, 5))
        if out and out[-1] != t:
            out.append(t)
    return out[:n]


def test_typing_steps_are_prefixes_or_short_backtracks() -> None:
    assert typing_step("hello", "hello wor") == 0
    assert typing_step("hello wx", "hello world") == 1
    assert typing_step("hello world", "goodbye") is None
    assert typing_step("a" * 40, "a" * 20 + "b") is None  # 20 deleted: more than a slip
    assert typing_step(None, "hello") is None
    chain = TypingChain()
    # a chain's start, then steps: a 4th backtrack on a 7-character text is over 2 + 7 // 12
    steps = [chain.step(t) for t in ["hel", "hello", "hello w", "hello x", "hello y",
                                      "hello z", "hello zz", "bye"]]  # fmt: skip
    assert steps == [(False, 0), (True, 0), (True, 0), (True, 0), (True, 0), (False, 0),
                     (True, 0), (False, 1)]  # fmt: skip


def test_a_typist_is_not_flagged(tweets) -> None:
    texts = _typing(tweets, 2000, 0)
    assert sum(_flags(texts, typed=False)) >= 100  # what it raised without its texts
    assert sum(_flags(texts, typed=True)) <= 2


def _first(texts: list[str], mine: list[bool]) -> int | None:
    flags = _flags(texts, typed=True)
    return next((sum(mine[: i + 1]) for i, h in enumerate(flags) if h and mine[i]), None)


def test_a_word_search_is_flagged_with_its_texts(tweets, vocab) -> None:
    for k, text in enumerate([t for t in tweets if len(t.split()) >= 10][100:103]):
        walk = word_search(text, vocab, 300, k)
        first = _first(walk, [True] * len(walk))
        assert first is not None and first <= 40, (k, first)


def _append_search(text: str, vocab: list[str], steps: int, seed: int) -> list[str]:
    """A suffix search typed on: 4 candidate words appended after the kept text, one kept
    (each candidate a backtrack over the one before: a search's branching)."""
    rng = np.random.default_rng(seed)
    out, kept = [], text
    for _ in range(steps):
        cands = [kept + " " + vocab[int(rng.integers(len(vocab)))] for _ in range(4)]
        out += cands
        kept = cands[int(rng.integers(4))]
    return out


def _padded(walk: list[str], seed: int) -> tuple[list[str], list[bool]]:
    """Each candidate of a search as a chain of its own: a fresh random start, then the
    candidate after it typed 8 characters at a time (marked: each chain's last text)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    mine: list[bool] = []
    for q in walk:
        head = "".join(KEYS[int(i)] for i in rng.integers(0, 26, 6)) + " "
        chain = [head[:-1]] + [head + q[:m] for m in range(8, len(q), 8)] + [head + q]
        out += chain
        mine += [False] * (len(chain) - 1) + [True]
    return out, mine


@pytest.mark.parametrize("plan", ["append", "padded"])
def test_searches_shaped_as_typing_are_still_flagged(tweets, vocab, plan: str) -> None:
    """A suffix search (branching is a chain's backtracks, over budget after ~10) and a
    word search whose candidates each come as their own fake typing chain."""
    for k, text in enumerate([t for t in tweets if len(t.split()) >= 10][100:103]):
        if plan == "append":
            texts = _append_search(text, vocab, 75, k)
            mine = [True] * len(texts)
        else:
            texts, mine = _padded(word_search(text, vocab, 100, k), k)
        first = _first(texts, mine)
        assert first is not None and first <= 40, (k, first)
