"""One search spread over several keys (Sybil accounts): serve/crosskey.py (issue 19)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mlwarden.serve.app import create_app
from mlwarden.serve.auth import hash_key, new_key
from mlwarden.serve.config import Detection, GatewayConfig, parse_config
from mlwarden.serve.crosskey import STATE_KEY, STATE_KIND
from mlwarden.serve.findings import silent_detectors
from mlwarden.serve.log import read_records, read_state
from mlwarden.serve.monitor import Monitor

DIMS = 64
ZERO = np.zeros(1, dtype=np.int64)


def _search(rng: np.random.Generator, n: int, x0: np.ndarray | None = None) -> list[np.ndarray]:
    """A noisy random search: steps of +-0.02 on a fifth of the values, half of them kept
    (a score that drops), every query with fresh noise of 0.01."""
    cur = rng.uniform(0.2, 0.8, DIMS) if x0 is None else x0.copy()
    out = []
    for _ in range(n):
        cand = np.clip(cur + rng.choice([-0.02, 0.02], DIMS) * (rng.random(DIMS) < 0.2), 0, 1)
        out.append((cand + rng.normal(0, 0.01, DIMS)).astype(np.float32))
        if rng.random() < 0.5:
            cur = cand
    return out


def _send(mon: Monitor, key: str, x: np.ndarray) -> dict[str, list[int]]:
    return mon.inspect(key, np.asarray(x, dtype=np.float32).reshape(1, DIMS), ZERO)


def _warm(mon: Monitor, rng: np.random.Generator, keys: list[str], n: int = 400) -> None:
    """Distinct benign inputs from ``keys`` in turn (none may be flagged)."""
    for i in range(n):
        assert not _send(mon, keys[i % len(keys)], rng.uniform(0, 1, DIMS))


def _first(mon: Monitor, qs: list[np.ndarray], keys: list[str]) -> dict[str, int]:
    """Each key's first query flagged ``crosskey`` (the search's query number)."""
    first: dict[str, int] = {}
    for i, q in enumerate(qs):
        if "crosskey" in _send(mon, keys[i % len(keys)], q):
            first.setdefault(keys[i % len(keys)], i + 1)
    return first


def test_a_search_over_four_keys_is_flagged_on_every_key_as_early_as_on_one() -> None:
    rng = np.random.default_rng(0)
    keys = [f"sybil-{k}" for k in range(4)]
    mon = Monitor(Detection(), shape=[DIMS])
    _warm(mon, rng, keys)
    qs = _search(rng, 120)
    first = _first(mon, qs, keys)
    # one key's similarity count needs 20 neighbours: 4 x 20 queries over 4 keys
    assert set(first) == set(keys) and max(first.values()) <= 40, first
    assert mon.crosskey is not None and mon.crosskey.parties["sybil-0"] == tuple(sorted(keys))
    # without the gateway-wide view no key is flagged by then
    off = Monitor(Detection.model_validate({"crosskey": {"enabled": False}}), shape=[DIMS])
    _warm(off, np.random.default_rng(0), keys)
    assert not any(_send(off, keys[i % 4], q) for i, q in enumerate(qs[:40]))


def test_one_key_alone_is_left_to_the_per_key_detectors() -> None:
    rng = np.random.default_rng(1)
    mon = Monitor(Detection(), shape=[DIMS])
    _warm(mon, rng, ["a", "b"])
    assert _first(mon, _search(rng, 120), ["solo"]) == {}


def _grief(converge: bool, seed: int) -> dict[str, int]:
    """A victim sends distinct inputs and resends one of them (fresh noise 0.005) now and
    then; a griefer sends near-copies of it that drift away (or, ``converge``, drift onto
    it from afar), a search's path built on the victim's input. Crosskey alerts per key."""
    rng = np.random.default_rng(seed)
    mon = Monitor(Detection(), shape=[DIMS])
    _warm(mon, rng, ["victim", "griefer"])
    x = rng.uniform(0.2, 0.8, DIMS)
    path = np.cumsum(rng.choice([-0.01, 0.01], (200, DIMS)) * (rng.random((200, DIMS)) < 0.2), 0)
    path = path[::-1] - path[-1] if converge else path
    alerts = {"victim": 0, "griefer": 0}
    for i in range(200):
        if i % 4 == 0:
            _send(mon, "victim", x + rng.normal(0, 0.005, DIMS))  # its first copy too
        elif i % 4 == 2:
            _send(mon, "victim", rng.uniform(0, 1, DIMS))
        found = _send(mon, "griefer", np.clip(x + path[i] + rng.normal(0, 0.005, DIMS), 0, 1))
        alerts["griefer"] += "crosskey" in found
        found = _send(mon, "victim", x + rng.normal(0, 0.005, DIMS))
        alerts["victim"] += "crosskey" in found
    return alerts


def test_near_copies_of_a_victims_queries_cannot_get_the_victim_flagged() -> None:
    for converge in (False, True):
        for seed in range(3):
            alerts = _grief(converge, seed)
            assert alerts["victim"] == 0, (converge, seed, alerts)
    # the griefer's own drifting copies are a search among the victim's: flagged
    assert _grief(False, 0)["griefer"] > 0


def test_many_keys_sending_popular_inputs_are_quiet_and_a_search_among_them_is_not() -> None:
    """50 keys, each sending distinct inputs and re-sending 5 popular ones (a viral image:
    each key's copies re-encoded with its own bias and fresh noise, some byte for byte)."""
    rng = np.random.default_rng(2)
    mon = Monitor(Detection(), shape=[DIMS])
    popular = rng.uniform(0.2, 0.8, (5, DIMS))
    bias = rng.normal(0, 0.01, (50, DIMS))
    flagged = 0
    for _ in range(3000):
        k = int(rng.integers(50))
        r = rng.random()
        if r < 0.4:
            x = popular[int(rng.integers(5))] + bias[k] + rng.normal(0, 0.01, DIMS)
        elif r < 0.6:
            x = popular[0]  # the same bytes from every key
        else:
            x = rng.uniform(0, 1, DIMS)
        flagged += "crosskey" in _send(mon, f"user-{k}", x)
    assert flagged == 0
    keys = [f"user-{k}" for k in range(4)]
    assert set(_first(mon, _search(rng, 120, popular[1]), keys)) == set(keys)


def test_the_ring_survives_a_restart() -> None:
    rng = np.random.default_rng(3)
    keys = [f"sybil-{k}" for k in range(4)]
    qs = _search(rng, 60)
    whole = Monitor(Detection(), shape=[DIMS])
    expected = _first(whole, qs, keys)
    before = Monitor(Detection(), shape=[DIMS])
    _first(before, qs[:12], keys)
    assert before.crosskey is not None
    blob = before.crosskey.dump()
    assert blob is not None
    after = Monitor(Detection(), shape=[DIMS])
    assert after.crosskey is not None
    after.crosskey.load(blob)
    for k in keys:
        state = before.dump(k)
        assert state is not None
        after.load(k, state)
    got = {k: v + 12 for k, v in _first(after, qs[12:], keys[:0] + keys).items()}
    assert expected and got == expected
    # a ring measured in other units is not loaded
    other = Monitor(Detection(), shape=[DIMS])
    assert other.crosskey is not None
    other.crosskey.tag += 1
    other.crosskey.load(blob)
    assert other.crosskey.dump() is None


def _config(tmp_path: Path, names: list[str], keys: dict[str, str]) -> GatewayConfig:
    """A blocking gateway on 8x8 inputs whose keys ``names`` hold the secrets ``keys``."""
    raw: dict[str, Any] = {
        "input": {"shape": [1, 8, 8], "range": [0.0, 1.0]},
        "limits": {"rate": 1000.0, "burst": 1000, "budget": 100000},
        "keys": {n: {"hash": hash_key(keys[n]), "role": "scores"} for n in names},
        "audit": {"path": str(tmp_path / "audit.db")},
        "detection": {"action": "block"},
    }
    return GatewayConfig.model_validate(raw)


def _gateway(tmp_path: Path, target: Any, names: list[str], keys: dict[str, str]) -> Any:
    return create_app(target, _config(tmp_path, names, keys), base_dir=tmp_path)


def test_the_gateway_blocks_each_key_of_a_sybil_search_and_names_them(
    tmp_path: Path, sklearn_target: Any, serve: Any
) -> None:
    names = [f"sybil-{k}" for k in range(4)]
    keys = {n: new_key() for n in names}
    live = serve(sklearn_target, _config(tmp_path, names, keys))
    qs = _search(np.random.default_rng(4), 80)
    blocked: set[str] = set()
    with httpx.Client(timeout=10) as c:
        for i, q in enumerate(qs):
            name = names[i % 4]
            r = c.post(
                f"{live.url}/v1/predict",
                json={"inputs": q.reshape(1, 1, 8, 8).tolist()},
                headers={"Authorization": f"Bearer {keys[name]}"},
            )
            if r.status_code == 403:
                blocked.add(name)
    assert blocked == set(names)
    live.stop()
    rows = [r for r in read_records(tmp_path / "audit.db") if "crosskey" in (r.get("alerts") or "")]
    assert rows and all(
        str(r["detail"]).endswith("crosskey keys: " + ",".join(names)) for r in rows
    )
    state = read_state(tmp_path / "audit.db")
    assert (STATE_KEY, STATE_KIND) in state
    again = _gateway(tmp_path, sklearn_target, names, keys).state.gateway
    assert again.monitor.crosskey is not None and again.monitor.crosskey._seen > 0
    assert again.blocked == set(names)


def test_gateway_check_notes_a_crosskey_that_can_never_flag() -> None:
    def notes(text: str) -> list[str]:
        return [n for n in silent_detectors(parse_config(text)) if n.startswith("crosskey")]

    assert notes("detection: {}") == []
    assert notes("detection: {crosskey: {window: 100, min_neighbours: 101}}")
    assert notes("detection: {crosskey: {window: 100, min_neighbours: 100}}") == []
    assert notes("detection: {similarity: {min_neighbours: 200}, crosskey: {window: 150}}")
