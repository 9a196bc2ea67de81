"""Blacklight: a match that is its owner moved by a pixel or two adds no link to a chain.

A key sending 8 x 8 digits and their one-pixel rolls (``rw._benign``'s pool) was flagged by
Blacklight at its 3,696th distinct query: three rolls of one digit within 39 queries, each
matching the one before (a column roll keeps 43-45 of a digit's 45 window hashes, a row
roll 36-38). Such a copy holds nothing its owner lacks but the strip moved in, so it
passes its owner's chain depth on unchanged (as half a match does); a search's steps still
add one each, copies interleaved or not.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.serve.config import Blacklight as BlacklightConfig
from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import SHIFTS, Blacklight, Monitor, shifted_copy

FRAME = (1, 8, 8)


def _digit(digits: tuple[np.ndarray, ...], i: int = 0) -> np.ndarray:
    return np.asarray(digits[0][i], dtype=np.float32).reshape(FRAME)


def _crop(a: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """``a`` moved by (dy, dx), the uncovered strip ``fill`` (a crop's padding: 0, the
    digits' background, is their lowest value)."""
    out = np.full_like(a, fill)
    h, w = a.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_a_moved_copy_is_one_and_a_changed_value_is_not(digits):
    a = _digit(digits)
    for dy, dx in SHIFTS:
        assert shifted_copy(a, np.roll(a, (dy, dx), axis=(-2, -1)))
        assert shifted_copy(a, _crop(a, dy, dx, 0.0))
    b = np.roll(a, 1, axis=-1)
    b[0, 4, 4] += 0.1  # a search's step on top of the move
    assert not shifted_copy(a, b)
    c = _crop(a, 0, 1, 0.0)
    c[0, 3, 0] = 0.5  # the strip holds a value of its own: not a fill
    assert not shifted_copy(a, c)
    # a fill of any other one value: two such moves set an edge line to any constant
    # (the red team's fill walk), so only the background (the lowest value) is a crop's
    assert not shifted_copy(a, _crop(a, 0, 1, 0.5))
    assert not shifted_copy(a, _crop(a, 1, 0, float(a.max())))
    assert not shifted_copy(a, np.roll(a, 3, axis=-1))  # beyond SHIFT
    assert not shifted_copy(a, _digit(digits, 1))


def _depths(bl: Blacklight, xs: list[np.ndarray]) -> list[int]:
    return bl.observe_many(np.stack(xs))[1]


def test_rolls_of_one_digit_sent_together_make_no_chain(digits):
    """The 3,696th query's chain (orig, row+1, col+1, col-1): flagged without the frame."""
    a = _digit(digits, 5)
    copies = [a] + [np.roll(a, s, axis=ax) for ax, s in ((1, 1), (2, 1), (2, -1), (1, -1))]
    cfg = BlacklightConfig()
    assert max(_depths(Blacklight(cfg), copies)) >= cfg.chain  # the alarm, as before
    assert max(_depths(Blacklight(cfg, frame=FRAME), copies)) < cfg.chain
    one = Blacklight(cfg, frame=FRAME)  # one query a call: owners come from the ring
    assert max(d for x in copies for d in _depths(one, [x])) < cfg.chain


def test_a_walk_of_moves_is_still_a_chain(digits):
    """Each query the one before moved a pixel, the strip the background (a translation
    search): a copy of an excused copy is a link, so the chain grows every other query."""
    a = _digit(digits, 3)
    rng = np.random.default_rng(0)
    walk, sent = [a], {a.tobytes()}
    while len(walk) < 12:
        dy, dx = SHIFTS[int(rng.integers(len(SHIFTS)))]
        if max(abs(dy), abs(dx)) > 1:
            continue
        b = _crop(walk[-1], dy, dx, float(walk[-1].min()))
        if b.tobytes() not in sent:
            sent.add(b.tobytes())
            walk.append(b)
    depths = _depths(Blacklight(BlacklightConfig(), frame=FRAME), walk)
    assert max(depths) >= BlacklightConfig().chain
    assert max(_depths(Blacklight(BlacklightConfig()), walk)) >= max(depths)  # sooner before


def _search(x0: np.ndarray, steps: int, seed: int) -> list[np.ndarray]:
    """A noiseless block search (Square-like): a 2 x 2 block moved +-0.1 a query, the
    kept point updated a third of the time; no query sent twice (the gateway drops an
    exact repeat before Blacklight)."""
    rng = np.random.default_rng(seed)
    kept, out, sent = x0.copy(), [], {x0.tobytes()}
    while len(out) < steps:
        y, x = rng.integers(0, 7, 2)
        q = kept.copy()
        q[0, y : y + 2, x : x + 2] = np.clip(
            q[0, y : y + 2, x : x + 2] + rng.choice([-0.1, 0.1]), 0, 1
        )
        if q.tobytes() in sent:
            continue
        sent.add(q.tobytes())
        out.append(q)
        if rng.random() < 1 / 3:
            kept = q
    return out


def _first_flag(bl: Blacklight, queries: list[np.ndarray], copies: bool) -> int | None:
    """The search's first flagged step, each step followed by a rolled copy of itself
    when ``copies`` (the attacker's padding: no depth lost, none gained)."""
    for i, q in enumerate(queries):
        if _depths(bl, [q])[0] >= bl.config.chain:
            return i + 1
        if copies:
            bl.observe_many(np.roll(q, 1 - 2 * (i % 2), axis=-1)[None])
    return None


@pytest.mark.parametrize("seed", range(4))
def test_a_search_padded_with_moved_copies_is_flagged_at_the_same_step(digits, seed):
    queries = _search(_digit(digits, 10 + seed), 40, seed)
    plain = _first_flag(Blacklight(BlacklightConfig()), queries, False)
    assert plain is not None and plain <= 10
    assert _first_flag(Blacklight(BlacklightConfig(), frame=FRAME), queries, True) == plain
    assert _first_flag(Blacklight(BlacklightConfig(), frame=FRAME), queries, False) == plain
    # without the frame the copies are links of their own: the padded search chains sooner
    padded = _first_flag(Blacklight(BlacklightConfig()), queries, True)
    assert padded is not None and padded <= plain


def test_the_ring_survives_a_restart(digits):
    """A key restarted between two rolls of one digit: the second still no link."""
    a = _digit(digits, 7)
    det = Detection.model_validate({"prada": {"enabled": False}})
    mon = Monitor(det, shape=list(FRAME))
    xs = [a, np.roll(a, 1, axis=2), np.roll(a, -1, axis=2), np.roll(a, 1, axis=1)]
    for x in xs[:2]:
        mon.inspect("k", x[None], np.zeros(1, dtype=np.int64))
    blob = mon.dump("k")
    assert blob is not None
    again = Monitor(det, shape=list(FRAME))
    again.load("k", blob)
    found = [again.inspect("k", x[None], np.zeros(1, dtype=np.int64)) for x in xs[2:]]
    bl = again._keys["k"].blacklight
    assert bl is not None and bl.depth == 0 and not any(f.get("blacklight") for f in found)
    assert bl._row_ids.max() == 3  # the two restored, then the two new
