"""A key's chain of nearby still balls is a walk, not resends (issue 19, session 11).

NES one point at a time (50 draws around a centre, then a step) with a fresh decoy
offset at each centre (``neshopd`` of ``benchmarks/gateway_detection_redteam10.py``) puts
each hop in a still ball of its own, about two radii from the last: every per-cloud view
reads a noisy resend. :func:`mlwarden.serve.stationary.walked` reads the key's recent rows
within ``CHAIN`` radii of the query instead: the hops follow each other in time, so the
newest rows stand apart from the older ones. Resends of distinct inputs (far apart) and
of a few nearby inputs in random order (mixed in time) keep their excuse.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.serve import stationary
from mlwarden.serve.config import Similarity as SimilarityConfig
from mlwarden.serve.dilution import Dilution
from mlwarden.serve.monitor import Similarity
from mlwarden.serve.stationary import TIGHT, WIDE, still

DIMS, HOP = 128, 51
CFG = SimilarityConfig(history=2000, window=1000)
R = CFG.radius


def _excused(stream: np.ndarray) -> list[int]:
    """The queries of ``stream`` (one a batch, every one a candidate) whose cloud the
    still-ball rule excuses."""
    sim = Similarity(CFG, DIMS)
    out = []
    for i, v in enumerate(stream):
        before = Dilution.snapshot(sim, 1)
        sim.observe_many(v[None])
        resends, _ = still(sim, v[None], [0], before, TIGHT, WIDE)
        if resends:
            out.append(i)
    return out


def _hops(rng: np.random.Generator, centres: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Tight copies (N(0, R / 20) a value) of ``centres[order]``, in that order."""
    return (centres[order] + rng.normal(0, R / 20, (len(order), DIMS))).astype(np.float32)


def _nes_decoy(seed: int, hops: int = 6) -> np.ndarray:
    """``hops`` runs of ``HOP`` queries, each around x0 plus a fresh +-a a value (centres
    about 2 radii apart) and a small step: neshopd in reduced space."""
    rng = np.random.default_rng(seed)
    x0 = rng.random(DIMS)
    a = np.sqrt(2) * R
    centres = x0 + rng.choice([-a, a], (hops, DIMS)) + np.arange(hops)[:, None] * R / 10
    return _hops(rng, centres, np.repeat(np.arange(hops), HOP))


def test_a_chain_of_nearby_still_balls_is_a_walk() -> None:
    stream = _nes_decoy(0)
    gaps = np.sqrt(((stream[HOP::HOP] - stream[:-HOP:HOP]) ** 2).mean(axis=1)) / R
    assert gaps.min() > 1.5 and gaps.max() < 2.6  # hops apart: no cloud holds two
    got = _excused(stream)
    assert any(i < HOP for i in got)  # the first hop alone is a resend
    assert not [i for i in got if i >= HOP]  # its chain moves from the second hop


def test_without_the_chain_every_hop_is_excused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stationary, "CHAIN", 0.0)
    got = _excused(_nes_decoy(0))
    assert len([i for i in got if i >= HOP]) > 3 * HOP  # what the rule takes away


@pytest.mark.parametrize("seed", [1, 2])
def test_resends_of_distinct_and_of_nearby_inputs_keep_their_excuse(seed: int) -> None:
    rng = np.random.default_rng(seed)
    far = rng.random((6, DIMS))  # distinct inputs, one after the other (a burst client)
    bursts = _excused(_hops(rng, far, np.repeat(np.arange(6), HOP)))
    x0 = rng.random(DIMS)
    near = x0 + rng.choice([-np.sqrt(2) * R, np.sqrt(2) * R], (3, DIMS))  # 2 radii apart
    mixed = _excused(_hops(rng, near, rng.integers(0, 3, 6 * HOP)))
    # every burst's copies from its 6th on; the nearby inputs' copies once each has 5
    assert len(bursts) >= 6 * (HOP - 6)
    assert len(mixed) >= 6 * HOP - 30
