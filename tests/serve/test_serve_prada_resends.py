"""PRADA on resends: a client resending inputs with a typo or fresh noise is no extraction.

PRADA's normality test (Juuti et al. 2019, arXiv:1805.02628) assumes distinct natural
inputs; a copy of an earlier input with one typo lies at a tiny distance from it, and a
pile of tiny distances fails the test (99 alarms per 1,000 tweets with a typo at the
default delta, ``benchmarks/gateway_detection_long.py``). A query within PRADA's
``resend`` bar of its class's nearest reference now counts as that reference, as exact
retries already did; Jacobian-augmentation queries step farther and are still flagged.
"""

from __future__ import annotations

import numpy as np

from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor


def _prada_only(**prada: float) -> Detection:
    return Detection.model_validate(
        {"prada": prada, "blacklight": {"enabled": False}, "similarity": {"enabled": False}}
    )


def _flags(mon: Monitor, xs: np.ndarray, labels: np.ndarray) -> int:
    return sum(bool(mon.inspect("k", xs[i : i + 1], labels[i : i + 1])) for i in range(len(xs)))


def test_tweets_resent_with_a_typo_are_not_an_extraction() -> None:
    from mlwarden.core.data import load_dataset
    from mlwarden.serve.text import text_features, typo

    ds = load_dataset("tweets")
    rng = np.random.default_rng(4)
    idx = rng.permutation(len(ds.x))[:400]
    texts, y = [str(t) for t in ds.x[idx]], np.asarray(ds.y)[idx]
    draws = rng.integers(0, len(texts), 2000)
    sent = np.empty(len(draws), dtype=object)
    sent[:] = [typo(texts[i], rng) for i in draws]
    labels = y[draws]
    det = _prada_only()
    sim = det.similarity
    feats = text_features(sent, sim.max_dims, sim.radius, sim.near)
    assert _flags(Monitor(det, scale=1.0, modality="text"), feats, labels) <= 2  # <= 1/1,000
    # every typo recorded as a distance (the rule until session 5): most tests fail
    old = Monitor(_prada_only(resend=0.0), scale=1.0, modality="text")
    assert _flags(old, feats, labels) > 40


def _jbda_stream(seeds: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Papernot et al.'s Jacobian augmentation, with random signs: seeds + 0.1 steps."""
    rng = np.random.default_rng(seed)
    pool = list(seeds)
    while len(pool) < n:
        pool += [np.clip(x + 0.1 * np.sign(rng.standard_normal(x.shape)), 0, 1) for x in pool]
    return np.stack(pool[:n]).astype(np.float32)


def test_extraction_steps_are_no_resends(digits, digits_model) -> None:
    """At the default bar (half the similarity radius: 0.05 per value) synthetic
    extraction queries still reach the normality test and fail it, while digits resent
    with noise of 0.01 stay quiet."""
    xtr, ytr, xte, _ = digits
    q = _jbda_stream(xte[:10], 160)
    labels = digits_model.predict(q.reshape(len(q), -1))
    assert _flags(Monitor(_prada_only(), shape=[1, 8, 8]), q, labels) > 0
    rng = np.random.default_rng(1)
    draws = rng.integers(0, 300, 2000)
    noisy = np.clip(xtr[draws] + rng.normal(0, 0.01, xtr[draws].shape), 0, 1)
    noisy = noisy.astype(np.float32)
    assert _flags(Monitor(_prada_only(), shape=[1, 8, 8]), noisy, ytr[draws]) <= 2
