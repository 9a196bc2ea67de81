"""Stateful detection: Blacklight fingerprints and PRADA, alone and through the gateway."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from mlwarden.serve.config import Blacklight as BlacklightConfig
from mlwarden.serve.config import Prada as PradaConfig
from mlwarden.serve.monitor import Blacklight, Prada, fingerprint


def _attack_stream(x0: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Queries like Square's (linf, eps 0.3): each one resets a 2x2 window of the last to x0 +- eps."""
    rng = np.random.default_rng(seed)
    cur = x0.copy()
    out = []
    for _ in range(n):
        nxt = cur.copy()
        r, c = rng.integers(0, 7, 2)
        window = x0[..., r : r + 2, c : c + 2] + rng.choice([-0.3, 0.3])
        nxt[..., r : r + 2, c : c + 2] = np.clip(window, 0, 1)
        out.append(nxt)
        cur = nxt
    return np.stack(out)


def _jbda_stream(seeds: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Synthetic extraction queries (Papernot et al. Jacobian augmentation): seeds + lambda steps."""
    rng = np.random.default_rng(seed)
    pool = list(seeds)
    while len(pool) < n:
        pool += [np.clip(x + 0.1 * np.sign(rng.standard_normal(x.shape)), 0, 1) for x in pool]
    return np.stack(pool[:n])


def test_fingerprint_ignores_changes_within_a_bin_and_sees_changes_across() -> None:
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 10, (1, 8, 8)) + 0.5) / 10  # values at bin centres
    base = fingerprint(x, 0.1, 20, 50)
    assert fingerprint(x + rng.uniform(-0.04, 0.04, x.shape), 0.1, 20, 50) == base
    moved = x.copy()
    moved[0, 4, 3] = (moved[0, 4, 3] + 0.5) % 1.0
    shared = len(fingerprint(moved, 0.1, 20, 50) & base)
    assert 0 < shared < len(base)


def test_fingerprint_keeps_at_most_top_hashes() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (3, 28, 28))
    assert len(fingerprint(x, 0.1, 20, 50)) == 50


def test_blacklight_flags_a_near_duplicate_stream_within_a_few_queries(digits) -> None:
    bl = Blacklight(BlacklightConfig())
    flags = [bl.flags(q) for q in _attack_stream(digits[2][0], 20)]
    assert any(flags[:5])
    assert sum(flags) >= 10


def test_blacklight_stays_quiet_on_shuffled_held_out_digits(digits) -> None:
    bl = Blacklight(BlacklightConfig())
    x = digits[2][np.random.default_rng(1).permutation(len(digits[2]))]
    assert sum(bl.flags(q) for q in x) == 0


def test_blacklight_forgets_queries_beyond_its_history() -> None:
    bl = Blacklight(BlacklightConfig(history=3))
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8))
    for q in x[:4]:
        bl.observe(q)
    assert bl.observe(x[0]) == 0  # evicted
    assert bl.observe(x[3]) >= 20  # remembered


def test_prada_flags_synthetic_extraction_queries(digits, digits_model) -> None:
    q = _jbda_stream(digits[2][:10], 120)
    labels = digits_model.predict(q.reshape(len(q), -1))
    prada = Prada(PradaConfig())
    assert any(prada.flags(x, int(y)) for x, y in zip(q, labels, strict=True))
    assert prada.last_w is not None and prada.last_w < 0.85


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prada_stays_quiet_on_natural_queries(digits, digits_model, seed: int) -> None:
    x = digits[2][np.random.default_rng(seed).permutation(len(digits[2]))[:150]]
    labels = digits_model.predict(x.reshape(len(x), -1))
    prada = Prada(PradaConfig())
    assert not any(prada.flags(q, int(y)) for q, y in zip(x, labels, strict=True))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_gateway_alerts_on_an_attack_stream_but_not_on_held_out_replays(
    gw_config, keys, serve, sklearn_target, digits, tmp_path
) -> None:
    live = serve(sklearn_target, gw_config())
    benign = digits[2][np.random.default_rng(2).permutation(len(digits[2]))[:160]]
    for i in range(0, len(benign), 16):
        r = httpx.post(
            f"{live.url}/v1/predict",
            json={"inputs": benign[i : i + 16].tolist()},
            headers=_auth(keys["labels"]),
        )
        assert r.status_code == 200
    for q in _attack_stream(digits[2][5], 10):
        httpx.post(
            f"{live.url}/v1/predict", json={"inputs": [q.tolist()]}, headers=_auth(keys["scores"])
        )
    text = httpx.get(f"{live.url}/metrics", headers=_auth(keys["admin"])).text
    alerts = [ln for ln in text.splitlines() if ln.startswith("mlwarden_alerts_total{")]
    assert any(
        ln.startswith('mlwarden_alerts_total{key="scores",kind="blacklight"}') for ln in alerts
    )
    assert not any('key="labels"' in ln for ln in alerts)
    from mlwarden.serve.log import read_records

    rows = read_records(tmp_path / "audit.db")
    assert any(r["key"] == "scores" and "blacklight" in r["alerts"] for r in rows)
    assert not any(r["key"] == "labels" and r["alerts"] for r in rows)


def test_block_action_refuses_the_flagged_query_and_the_key_afterwards(
    gw_config, keys, serve, sklearn_target, digits
) -> None:
    live = serve(sklearn_target, gw_config(detection={"action": "block"}))
    codes = [
        httpx.post(
            f"{live.url}/v1/predict", json={"inputs": [q.tolist()]}, headers=_auth(keys["scores"])
        ).status_code
        for q in _attack_stream(digits[2][7], 8)
    ]
    first = codes.index(403)
    assert first <= 4 and all(c == 403 for c in codes[first:])
    other = httpx.post(
        f"{live.url}/v1/predict",
        json={"inputs": [digits[2][0].tolist()]},
        headers=_auth(keys["labels"]),
    )
    assert other.status_code == 200


def test_throttle_action_slows_the_flagged_key(
    gw_config, keys, serve, sklearn_target, digits
) -> None:
    cfg = gw_config(
        limits={"rate": 100.0, "burst": 100},
        detection={"action": "throttle", "throttle_factor": 0.01},
    )
    live = serve(sklearn_target, cfg)
    for q in _attack_stream(digits[2][3], 5):
        httpx.post(
            f"{live.url}/v1/predict", json={"inputs": [q.tolist()]}, headers=_auth(keys["scores"])
        )
    assert live.gateway.limiters["scores"].factor == 0.01
    assert live.gateway.limiters["labels"].factor == 1.0
