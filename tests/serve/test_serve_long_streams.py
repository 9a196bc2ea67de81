"""Long benign streams: false alarms that do not grow with the history, and the
adaptive searches (noisy, interleaved with benign queries) still flagged.

Benign neighbours accumulate with the number of remembered queries; a search's cluster
in time. The similarity count that meets ``min_neighbours`` is taken over the last
``similarity.window`` queries, Blacklight seeks matches among its last ``history``
(1,000 by default, as long as ``gateway calibrate``'s benign streams).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.datasets import make_classification

from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor, Similarity


def _shifted_digits(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Distinct digits and their one-pixel shifts, shuffled: natural, never repeated."""
    pool = np.concatenate([x] + [np.roll(x, s, axis=a) for a in (2, 3) for s in (-1, 1)])
    return pool[np.random.default_rng(seed).permutation(len(pool))[:n]].astype(np.float32)


def _blacklight_only(**blacklight: int) -> Detection:
    return Detection.model_validate(
        {"blacklight": blacklight, "similarity": {"enabled": False}, "prada": {"enabled": False}}
    )


def _flags(mon: Monitor, key: str, xs: np.ndarray) -> np.ndarray:
    zero = np.zeros(1, dtype=np.int64)
    return np.array([bool(mon.inspect(key, x[None], zero)) for x in xs])


def test_blacklight_is_quiet_on_digits_and_their_one_pixel_shifts(digits) -> None:
    """A digit and its one-pixel shifts are near-duplicates by Blacklight's own measure
    (they share most window hashes), but a benign client sends them at random times,
    hundreds of queries apart; a search's queries match the one sent just before. Only
    chains of matches with recent queries flag (``Blacklight._chain``): counting the
    matches among the last 64 queries flagged 100-320 of every 1,000 such digits."""
    xtr, _, xte, _ = digits
    xs = _shifted_digits(np.concatenate([xtr, xte]), 6000, seed=0)
    for det in (_blacklight_only(), _blacklight_only(history=10000)):
        flags = _flags(Monitor(det, shape=[1, 8, 8]), "k", xs)
        assert flags.sum() <= 6, (det.blacklight.history, flags.sum())  # <= 1 per 1,000


def test_blacklight_chains_a_search_spread_one_query_in_fifty(
    digits, digits_model, noisy_search: Callable[..., list[np.ndarray]]
) -> None:
    """A plain search with 50 benign queries between its own: each of its queries still
    matches its previous one (51 queries back, within the chain's 64), so the chain grows;
    the benign queries stay within 1 alarm per 1,000."""
    xtr, _, xte, yte = digits
    benign = _shifted_digits(xtr, 1000 + 50 * 40, seed=2)
    for i in range(2):
        mon = Monitor(_blacklight_only(), shape=[1, 8, 8])
        quiet = _flags(mon, "k", benign[:1000]).sum()
        attack = noisy_search(digits_model, xte[i], int(yte[i]), 40, 0.0, seed=i)
        flags = _flags(mon, "k", _interleave(attack, benign[1000:], 50))
        hits = flags[50::51]
        assert hits.any() and int(np.argmax(hits)) < 30, (i, hits)
        assert quiet + np.delete(flags, np.s_[50::51]).sum() <= 3, quiet


def _table(n: int) -> np.ndarray:
    x, _ = make_classification(n, 20, n_informative=6, n_redundant=6, random_state=1)
    return ((x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))).astype(np.float32)


def _similarity_only(**similarity: float) -> Detection:
    return Detection.model_validate(
        {"similarity": similarity, "blacklight": {"enabled": False}, "prada": {"enabled": False}}
    )


def test_similarity_false_alarms_do_not_grow_with_the_history() -> None:
    """10,000 distinct rows of one key at the radius `gateway calibrate` picks for this
    table on 1,000-query streams (0.07): quiet over the window, at any stream length."""
    xs = _table(10_000)
    flags = _flags(Monitor(_similarity_only(radius=0.07), shape=[20]), "k", xs)
    assert flags.sum() <= 10, flags.sum()  # <= 1 per 1,000
    # counted over the whole history (the rule until session 4): 294, 77 in the last 1,000
    # (counts: since session 7 such a count spread over its window also asks whether the
    # ball moves, and distinct rows in random order do not)
    whole = _similarity_only(radius=0.07, window=10_000)
    mon, sim = Monitor(whole, shape=[20]), Similarity(whole.similarity, 20)
    old = np.array([sim.observe(mon.summarise(x)) >= 20 for x in xs])
    assert old[-1000:].sum() > 20, old[-1000:].sum()


def _interleave(attack: list[np.ndarray], benign: np.ndarray, every: int) -> np.ndarray:
    """One attack query after every ``every`` benign ones (the attack's at positions k*(every+1)+every)."""
    out = []
    for k, q in enumerate(attack):
        out += list(benign[k * every : (k + 1) * every]) + [q]
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("every", [1, 4])
def test_a_noisy_search_mixed_into_benign_traffic_is_flagged(
    digits, digits_model, noisy_search: Callable[..., list[np.ndarray]], every: int
) -> None:
    """After 2,000 benign queries of the same key, a sigma-0.05 noisy search sent one
    query in every 2 (1:1) or every 5 (1:4) is flagged within 300 of its queries."""
    xtr, _, xte, yte = digits
    benign = _shifted_digits(xtr, 2000 + 300 * every, seed=1)
    for i in range(2):
        mon = Monitor(Detection(), shape=[1, 8, 8])
        _flags(mon, "k", benign[:2000])
        attack = noisy_search(digits_model, xte[i], int(yte[i]), 300, 0.05, seed=i)
        flags = _flags(mon, "k", _interleave(attack, benign[2000:], every))
        assert flags.any(), (every, i)
        first = int(np.argmax(flags)) // (every + 1) + 1  # in the attack's own queries
        assert first <= 300, (every, i, first)


def test_blacklight_flags_a_plain_search_after_a_long_benign_history(
    digits, digits_model, noisy_search: Callable[..., list[np.ndarray]]
) -> None:
    """Blacklight alone at its default history and at 64 (the chain's own window)."""
    xtr, _, xte, yte = digits
    warm = _shifted_digits(xtr, 2000, seed=1)
    for det in (_blacklight_only(), _blacklight_only(history=64)):
        for i in range(3):
            mon = Monitor(det, shape=[1, 8, 8])
            _flags(mon, "k", warm)
            attack = noisy_search(digits_model, xte[i], int(yte[i]), 300, 0.0, seed=i)
            flags = _flags(mon, "k", np.stack(attack))
            assert flags.any() and int(np.argmax(flags)) < 60, (det.blacklight.history, i)


def test_calibration_holds_on_a_stream_ten_times_its_own_length() -> None:
    """`gateway calibrate` measures 1,000-query streams; its setting must stay under
    1 alarm per 1,000 on 10,000 distinct rows of the same kind (18 per 1,000 when the
    neighbour count ran over the whole history)."""
    from mlwarden.serve.calibrate import calibrate
    from mlwarden.serve.config import GatewayConfig

    x, y = make_classification(12_000, 20, n_informative=6, n_redundant=6, random_state=0)
    x = ((x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))).astype(np.float32)
    cfg = GatewayConfig.model_validate({"input": {"shape": [20], "range": [0.0, 1.0]}})
    result = calibrate(cfg, x[10_000:], y[10_000:], searches=2, seed=0)
    det = result.detection
    assert result.meets and det.similarity.window == 1000
    # the whole history's bar, above the benign counts extrapolated to 10,000 queries
    assert det.similarity.long_neighbours is not None
    assert det.similarity.long_neighbours >= 2 * det.similarity.min_neighbours
    flags = _flags(Monitor(det, shape=[20]), "k", x[:10_000])
    assert flags.sum() <= 10, flags.sum()


def test_calibration_cuts_the_windows_to_the_streams_it_measured(digits) -> None:
    from mlwarden.serve.calibrate import calibrate
    from mlwarden.serve.config import GatewayConfig

    xtr, ytr, _, _ = digits
    cfg = GatewayConfig.model_validate({"input": {"shape": [1, 8, 8], "range": [0.0, 1.0]}})
    result = calibrate(cfg, xtr[:400], ytr[:400], benign=300, searches=1, seed=0)
    det = result.detection
    assert (det.similarity.window, det.blacklight.history) == (300, 300)
    assert any("cut to 300" in n for n in result.notes), result.notes
    # Blacklight's pick is also quiet one link short of its chain (headroom): benign
    # chains are rarer than a 300-query stream resolves
    bl = det.blacklight
    key = f"blacklight q {bl.quantization} threshold {bl.threshold} chain {bl.chain - 1} (headroom)"
    assert max(result.tried[key]["false_alarms"].values()) == 0, result.tried


def test_a_search_diluted_below_the_window_is_flagged_by_the_whole_history(
    digits, digits_model, noisy_search: Callable[..., list[np.ndarray]]
) -> None:
    """One search query in every 61: at most 17 in any 1,000-query window, under the
    20 neighbours that flag; ``long_neighbours`` (40 here) counts the whole history."""
    xtr, _, xte, yte = digits
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, len(xtr), (2, 10_000))
    w = rng.uniform(0.3, 0.7, (10_000, 1, 1, 1)).astype(np.float32)
    benign = (w * xtr[a] + (1 - w) * xtr[b]).astype(np.float32)  # distinct mixtures
    attack = noisy_search(digits_model, xte[0], int(yte[0]), 150, 0.05, seed=0)
    stream = np.concatenate([benign[:1000], _interleave(attack, benign[1000:], 60)])
    firsts = {}
    for bar in (None, 40):
        det = _similarity_only(long_neighbours=bar) if bar else _similarity_only()
        flags = _flags(Monitor(det, shape=[1, 8, 8]), "k", stream)
        attack_flags = flags[1000:][60::61]
        assert not flags[:1000].any() and not np.delete(flags[1000:], np.s_[60::61]).any()
        firsts[bar] = int(np.argmax(attack_flags)) + 1 if attack_flags.any() else None
    assert firsts[None] is None, firsts  # the window alone cannot see it
    assert firsts[40] is not None and firsts[40] <= 80, firsts


def test_text_calibration_keeps_headroom_below_its_neighbour_count() -> None:
    """A text setting counts as quiet only when it is also quiet at half its neighbours:
    at near 0.3 and 10 neighbours, quiet on 1,000 calibration tweets, 10,000 other tweets
    gave 4.2 alarms per 1,000 (20 neighbours: 0.3; benchmarks/gateway_detection_long.py).
    The margin is asked of the distinct streams, not of ``few``, which resends each text
    ~10 times a window by construction: asked of it too (sessions 7-8) the pick moved to
    40 neighbours and the word search's first flag to 42-49 (session 9, issue 19)."""
    from mlwarden.core.data import load_dataset
    from mlwarden.serve.calibrate import HEADROOM_STREAMS, calibrate
    from mlwarden.serve.config import GatewayConfig

    ds = load_dataset("tweets")
    idx = np.random.default_rng(2).permutation(len(ds.x))[:600]
    cfg = GatewayConfig.model_validate({"input": {"modality": "text"}})
    texts = np.asarray([str(t) for t in ds.x[idx]], dtype=object)
    result = calibrate(cfg, texts, np.asarray(ds.y)[idx], benign=400, searches=2, seed=0)
    sim = result.detection.similarity
    assert result.meets, result.notes
    half = result.tried[
        f"similarity near {sim.near} neighbours {sim.min_neighbours // 2} (headroom)"
    ]
    assert max(half["false_alarms"][k] for k in HEADROOM_STREAMS) == 0, half
    # and on this data the rule did pass over a setting (one not quiet at half its count)
    assert any(k.endswith("(headroom)")
               and max(v["false_alarms"][s] for s in HEADROOM_STREAMS) > 0
               for k, v in result.tried.items()), result.tried  # fmt: skip
    # the few stream is not quiet at half the count picked (its copies meet it), and
    # the pick is the 20 neighbours that flag the word search at ~21-31, not 40
    assert half["false_alarms"]["few"] > 0 and sim.min_neighbours == 20, (half, sim)
    assert all(f is not None and f <= 31 for f in result.first_flags), result.first_flags
