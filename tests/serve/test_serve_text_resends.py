"""Texts resent with typos and case changes are resends on text too; searches still walk.

Session 8 (issue 19): the still-ball rule (``similarity.stationary``, serve/stationary.py)
is on by default for text. A few tweets resent with a typo half the time and a case
change half the time are excused; a word-substitution search (each kept word stays in
the next query) and a random sampler (each candidate one fresh random word on its text,
nothing kept: a still ball of the whole radius, but with no copies within ``TIGHT`` of
each other) are flagged as before.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor
from mlwarden.serve.text import text_features, typo, word_search

LABEL = np.zeros(1, dtype=np.int64)


@pytest.fixture(scope="module")
def tweets() -> list[str]:
    from mlwarden.core.data import load_dataset

    return [str(t) for t in load_dataset("tweets").x]


def _det(stationary: bool | None) -> Detection:
    # near 0.3 and 20 neighbours: a setting `gateway calibrate` picks on tweets
    return Detection.model_validate({
        "similarity": {"near": 0.3, "min_neighbours": 20, "stationary": stationary},
        "blacklight": {"quantization": 0.1, "threshold": 40}, "prada": {"enabled": False}})  # fmt: skip


def _feats(det: Detection, texts: list[str]) -> np.ndarray:
    arr = np.empty(len(texts), dtype=object)
    arr[:] = texts
    s = det.similarity
    return text_features(arr, s.max_dims, s.radius, s.near)


def _alerts(det: Detection, texts: list[str]) -> int:
    mon = Monitor(det, scale=1.0, modality="text")
    f = _feats(det, texts)
    return sum(bool(mon.inspect("k", f[i : i + 1], LABEL)) for i in range(len(f)))


def _first(det: Detection, texts: list[str]) -> int | None:
    mon = Monitor(det, scale=1.0, modality="text")
    f = _feats(det, texts)
    return next((i + 1 for i in range(len(f)) if mon.inspect("k", f[i : i + 1], LABEL)), None)


def _resends(tweets: list[str], seed: int = 0) -> list[str]:
    """5 tweets, 400 sends: lower-cased or capitalised half the time, a typo half the time."""
    rng = np.random.default_rng(seed)
    long = [t for t in tweets if len(t.split()) >= 10]
    picks = [long[i] for i in rng.choice(len(long), 5, replace=False)]
    out = []
    for i in rng.integers(0, 5, 400):
        t, r = picks[i], rng.random()
        t = t.lower() if r < 0.25 else t.capitalize() if r < 0.5 else t
        out.append(typo(t, rng) if rng.random() < 0.5 else t)
    return out


def _sampler(text: str, vocab: list[str], n: int, seed: int) -> list[str]:
    """A random search that keeps nothing: each query is ``text`` with one random word
    put at a random position, and a typo (independent draws around one text)."""
    rng = np.random.default_rng(seed)
    words = text.split(" ")
    out = []
    for _ in range(n):
        cand = list(words)
        cand[int(rng.integers(len(cand)))] = vocab[int(rng.integers(len(vocab)))]
        out.append(typo(" ".join(cand), rng))
    return out


def test_tweets_resent_with_typos_and_case_changes_are_resends_by_default(tweets) -> None:
    texts = _resends(tweets)
    assert Monitor(_det(None), scale=1.0, modality="text").stationary
    before = _alerts(_det(False), texts)  # session 7's default for text
    assert before >= 40, before
    assert _alerts(_det(None), texts) <= 8


@pytest.mark.parametrize("kind", ["walk", "sampler"])
def test_word_searches_on_a_text_are_still_flagged_with_the_rule(tweets, kind: str) -> None:
    vocab = sorted({w for t in tweets[:3000] for w in t.split() if w.isalpha()})
    make: Callable[[str, int], list[str]] = (
        (lambda t, s: word_search(t, vocab, 300, s)) if kind == "walk"
        else (lambda t, s: _sampler(t, vocab, 300, s))
    )  # fmt: skip
    texts = [t for t in tweets if len(t.split()) >= 10][100:103]
    for k, text in enumerate(texts):
        first = _first(_det(None), make(text, k))
        assert first is not None and first <= 40, (k, first)


def _short_pool(tweets: list[str], n: int, seed: int = 0) -> list[str]:
    """A client resending 50 short tweets (at most 60 characters) in random order, a
    typo half the time: ~1 send in 50 is a given tweet, so its 20 copies span the window."""
    rng = np.random.default_rng(seed)
    short = [t for t in tweets if 25 <= len(t) <= 60 and len(t.split()) >= 4]
    picks = [short[i] for i in rng.choice(len(short), 50, replace=False)]
    return [typo(picks[i], rng) if rng.random() < 0.5 else picks[i]
            for i in rng.integers(0, 50, n)]  # fmt: skip


def test_short_tweets_resent_with_typos_over_the_window_are_resends(tweets) -> None:
    """Two typo copies of a short tweet share too few shingles to be each other's own
    cloud; a count met only by copies spread over the window is judged on the ball's
    drift (Monitor._spread_out): session 9 (issue 19), 12 per 1,000 before on 5,000."""
    texts = _short_pool(tweets, 3000)
    assert _alerts(_det(None), texts) <= 1


def _walk_among(
    tweets: list[str], vocab: list[str], every: int, k: int
) -> tuple[list[str], list[bool]]:
    """A word search on a tweet, one query after ``every`` distinct benign tweets."""
    text = [t for t in tweets if len(t.split()) >= 10][200 + k]
    walk = word_search(text, vocab, 300, 7 + k)
    benign = [t for t in tweets[5000:] if t != text]
    out, mine = [], []
    for i, q in enumerate(walk):
        out += benign[i * every : (i + 1) * every] + [q]
        mine += [False] * every + [True]
    return out, mine


@pytest.mark.parametrize("every", [0, 15])
def test_a_word_search_concentrated_or_spread_over_the_window_is_flagged(tweets, every) -> None:
    """The spread-out rule judges a count spread over the window by its drift: a word
    search one query in 16 of the key's (its 20th neighbour ~320 queries back) walks, and
    is flagged within its 300 queries; concentrated, it keeps the tight cloud's verdict."""
    vocab = sorted({w for t in tweets[:3000] for w in t.split() if w.isalpha()})
    det = _det(None)
    for k in range(3):
        texts, mine = _walk_among(tweets, vocab, every, k)
        mon = Monitor(det, scale=1.0, modality="text")
        f = _feats(det, texts)
        flags = [bool(mon.inspect("k", f[i : i + 1], LABEL)) for i in range(len(f))]
        hits = [sum(mine[: i + 1]) for i, h in enumerate(flags) if h and mine[i]]
        assert hits and hits[0] <= (30 if every == 0 else 300), (k, hits[:3])
