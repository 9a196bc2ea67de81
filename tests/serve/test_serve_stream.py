"""A stream's overlapping audio windows are new content, not a search (issue 19).

A client classifying a live stream sends windows that overlap (1 s every 0.25 s): each
shares its overlap's Blacklight hashes with the one before, and the chain flagged 230-248
of 1,000 windows of real calls. A window that continues the key's previous one (the same
samples at another offset, :func:`mlwarden.serve.stream.lag`) and whose new samples bring
nothing the key sent before has its Blacklight alert dropped (serve/stream.py).
"""

from __future__ import annotations

import numpy as np

from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor
from mlwarden.serve.stream import MIN_HOP, lag, tolerance

_LABEL = np.zeros(1, dtype=np.int64)
_TOL = tolerance(2.0)


def _call(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Noise bursts ("syllables") of random lengths and loudness, short pauses, 16-bit."""
    n = int(seconds * 8000)
    call, t = np.zeros(n), 0
    while t < n:
        length = int(rng.integers(400, 1600))
        seg = (rng.normal(0, 1, length) * np.hanning(length) * rng.uniform(0.2, 0.6))[: n - t]
        call[t : t + len(seg)] = seg
        t += length + int(rng.integers(100, 600))
    return (np.round(np.clip(call, -1, 1) * 32767) / 32767).astype(np.float32)


def _windows(call: np.ndarray, hop: int, n: int = 8000) -> list[np.ndarray]:
    return [call[s : s + n] for s in range(0, len(call) - n + 1, hop)]


def _flags(mon: Monitor, xs: list[np.ndarray], key: str = "k") -> dict[str, int]:
    out: dict[str, int] = {}
    for x in xs:
        for kind in mon.inspect(key, x[None, None], _LABEL):
            out[kind] = out.get(kind, 0) + 1
    return out


def _monitor() -> Monitor:
    return Monitor(Detection(), shape=[1, 8000], scale=2.0, modality="audio", secret=bytes(32))


def test_lag_finds_the_hop_of_a_continuation_and_nothing_else() -> None:
    call = _call(np.random.default_rng(0), 3.0)
    a, b = call[:8000], call[2000:10000]
    assert lag(a, b, _TOL) == 2000
    assert lag(a, call[800:8800], _TOL) == 800
    assert lag(a, call[700:8700], _TOL) is None  # a hop below MIN_HOP: no continuation
    assert MIN_HOP * 8000 > 700
    assert lag(a, call[7000:15000], _TOL) is None  # overlap below MIN_OVERLAP
    changed = b.copy()
    changed[3000] += 0.01  # one sample of the overlap changed: not the same samples
    assert lag(a, changed, _TOL) is None
    assert lag(b, a, _TOL) is None  # backwards: a's head is no tail of b
    assert lag(np.zeros(8000, np.float32), np.zeros(8000, np.float32), _TOL) is None


def test_a_streams_windows_raise_no_blacklight_chain() -> None:
    rng = np.random.default_rng(1)
    xs = [w for _ in range(6) for w in _windows(_call(rng, 4.0), 2000)]
    assert _flags(_monitor(), xs).get("blacklight", 0) == 0
    # the same windows, one sample of each moved by a step of the bins: no continuation,
    # and Blacklight chains them as before
    moved = [x.copy() for x in xs]
    for i, x in enumerate(moved):
        x[(i * 37) % 1000] += 0.25
    assert _flags(_monitor(), moved).get("blacklight", 0) >= len(xs) // 2


def test_a_differently_built_stream_a_16k_hop_with_hiss() -> None:
    rng = np.random.default_rng(2)
    call = _call(rng, 6.0) + rng.normal(0, 0.003, 48000).astype(np.float32)
    xs = _windows(np.round(call * 32767) / 32767, 1600)
    assert _flags(_monitor(), xs).get("blacklight", 0) == 0


def test_a_tape_of_one_clips_copies_keeps_its_blacklight_alerts() -> None:
    """Windows sliding over copies of one clip, each with a Square step of its own: every
    window continues the one before, but its new samples repeat the copy before."""
    rng = np.random.default_rng(3)
    x0 = _call(rng, 1.0)
    copies, delta = [], np.zeros(8000, np.float32)
    for _ in range(12):
        s = int(rng.integers(0, 7920))
        delta[s : s + 80] = np.clip(delta[s : s + 80] + rng.choice([-0.1, 0.1]), -0.2, 0.2)
        copies.append(np.clip(x0 + delta, -1, 1))
    xs = _windows(np.concatenate(copies), 2000)
    assert all(lag(a, b, _TOL) == 2000 for a, b in zip(xs, xs[1:], strict=False))
    assert _flags(_monitor(), xs).get("blacklight", 0) >= len(xs) // 2


def test_the_continuation_is_per_key_and_batched_as_one_query_at_a_time() -> None:
    rng = np.random.default_rng(4)
    xs = _windows(_call(rng, 4.0), 2000)
    mon = _monitor()
    alerts = mon.inspect("k", np.stack(xs)[:, None], np.zeros(len(xs), np.int64))
    assert not alerts.get("blacklight")
    # interleaved with another key's windows, each key continues its own
    other = _windows(_call(rng, 4.0), 2000)
    both = [w for pair in zip(xs, other, strict=True) for w in pair]
    mon = _monitor()
    for i, x in enumerate(both):
        assert not mon.inspect(f"k{i % 2}", x[None, None], _LABEL).get("blacklight")


def test_a_phrase_the_stream_repeats_links_once_and_is_not_flagged() -> None:
    """An announcement played twice in one call: the second time its windows' new samples
    are carried by the first time's (a link each, to a window whose own chain is 0)."""
    rng = np.random.default_rng(5)
    phrase = _call(rng, 2.5)
    call = np.concatenate([_call(rng, 1.5), phrase, _call(rng, 1.0), phrase, _call(rng, 1.5)])
    xs = _windows(call, 2000)
    mon = _monitor()
    assert _flags(mon, xs).get("blacklight", 0) == 0
    assert mon._keys["k"].blacklight is not None
    assert max(mon._keys["k"].blacklight._depths) == 1  # the repeat did link, once
