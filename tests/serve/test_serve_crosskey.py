"""One search spread over several keys (Sybil accounts): serve/crosskey.py (issue 19)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mlwarden.serve import crosskey
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


def test_a_search_over_20_100_and_150_keys_is_flagged_as_soon_as_its_ball_fills() -> None:
    """Each key a few steps (150 keys: one each): no key's own count grows; the ball of
    all keys' steps holds 20 neighbours after 21 queries."""
    for k in (20, 100, 150):
        rng = np.random.default_rng(k)
        keys = [f"sybil-{i}" for i in range(k)]
        mon = Monitor(Detection(), shape=[DIMS])
        _warm(mon, rng, keys[:20])
        qs = _search(rng, 150)
        first = _first(mon, qs, keys)
        assert first and min(first.values()) <= 30, (k, first)
        assert len(first) >= min(k, 100), (k, len(first))  # most keys flagged by their step
        assert mon.crosskey is not None
        assert len(mon.crosskey.parties[min(first, key=first.__getitem__)]) > 5


def test_a_busy_gateway_does_not_hide_a_search() -> None:
    """100 distinct queries of 50 other users between two steps of a search over 20 keys:
    20 steps span 2,000 queries of the whole gateway, twice its window; the steps stay
    in the ring of queries that had neighbours."""
    rng = np.random.default_rng(5)
    keys = [f"sybil-{i}" for i in range(20)]
    mon = Monitor(Detection(), shape=[DIMS])
    first = None
    for i, q in enumerate(_search(rng, 40)):
        for b in range(100):
            assert not _send(mon, f"user-{b % 50}", rng.uniform(0, 1, DIMS)).get("crosskey")
        if "crosskey" in _send(mon, keys[i % 20], q) and first is None:
            first = i + 1
    assert first is not None and first <= 30, first


def _camera(rng: np.random.Generator, n: int, apps: int = 20) -> list[tuple[int, np.ndarray]]:
    """``apps`` apps polling one public camera, each a frame in 10 at random: a scene whose
    lighting drifts, sensor noise 0.004, each app's own bias (its codec) and 8-bit values."""
    bg, bias = rng.uniform(0.2, 0.8, DIMS), rng.normal(0, 0.002, (apps, DIMS))
    out: list[tuple[int, np.ndarray]] = []
    t, walk = 0, 0.0
    while len(out) < n:
        walk = float(np.clip(walk + rng.normal(0, 0.002), -0.15, 0.15))
        f = bg * (1 + 0.08 * np.sin(2 * np.pi * t / 1800) + walk) + rng.normal(0, 0.004, DIMS)
        for k in np.flatnonzero(rng.random(apps) < 0.1).tolist():
            out.append((k, np.round(np.clip(f + bias[k], 0, 1) * 255) / 255))
        t += 1
    return out[:n]


def test_many_apps_polling_one_camera_are_quiet(monkeypatch: Any) -> None:
    """A moving ball over 20 keys, like a search over 20, but dense: each frame a
    near-copy of the last (sensor noise), sent by about 2 apps."""
    stream = _camera(np.random.default_rng(6), 600)
    mon = Monitor(Detection(), shape=[DIMS])
    assert not any("crosskey" in _send(mon, f"app-{k}", x) for k, x in stream)
    monkeypatch.setattr(crosskey, "DENSE", 0.0)  # without the dense-stream rule
    monkeypatch.setattr(crosskey, "COPY", 0.0)  # nor the copy rule
    monkeypatch.setattr(crosskey, "RESEND", 0.0)  # nor the own-resend rule
    mon = Monitor(Detection(), shape=[DIMS])
    assert sum("crosskey" in _send(mon, f"app-{k}", x) for k, x in stream) > 100


def test_one_key_alone_is_left_to_the_per_key_detectors() -> None:
    rng = np.random.default_rng(1)
    mon = Monitor(Detection(), shape=[DIMS])
    _warm(mon, rng, ["a", "b"])
    assert _first(mon, _search(rng, 120), ["solo"]) == {}


def _crosskey_only() -> Detection:
    """The per-key detectors that do not feed crosskey off (it reads the similarity
    detector's vectors only): the same crosskey alerts at ~0.7x the CPU (session 13)."""
    return Detection(blacklight={"enabled": False}, prada={"enabled": False},
                     spread={"enabled": False})  # fmt: skip


def _grief(converge: bool, seed: int, griefers: int = 1, step: float = 0.01) -> dict[str, int]:
    """A victim sends distinct inputs and resends one of them (fresh noise 0.005) now and
    then; ``griefers`` keys in turn send near-copies of it that drift away (or,
    ``converge``, drift onto it from afar), a search's path built on the victim's input.
    Crosskey alerts of the victim and of the griefers."""
    rng = np.random.default_rng(seed)
    mon = Monitor(_crosskey_only(), shape=[DIMS])
    _warm(mon, rng, ["victim", "griefer-0"])
    x = rng.uniform(0.2, 0.8, DIMS)
    path = np.cumsum(rng.choice([-step, step], (200, DIMS)) * (rng.random((200, DIMS)) < 0.2), 0)
    path = path[::-1] - path[-1] if converge else path
    alerts = {"victim": 0, "griefer": 0}
    for i in range(200):
        if i % 4 == 0:
            _send(mon, "victim", x + rng.normal(0, 0.005, DIMS))  # its first copy too
        elif i % 4 == 2:
            _send(mon, "victim", rng.uniform(0, 1, DIMS))
        copy = np.clip(x + path[i] + rng.normal(0, step / 2, DIMS), 0, 1)
        found = _send(mon, f"griefer-{i % griefers}", copy)
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


def test_many_griefers_cannot_get_the_victim_flagged_either() -> None:
    """The same over 10 and 40 griefer keys (the rule for searches over many keys), whose
    copies step 0.02 (a step of 0.01 with noise 0.005 is a dense stream: module docstring)."""
    for griefers, converge, seed in ((10, False, 0), (40, True, 1), (40, False, 2)):
        alerts = _grief(converge, seed, griefers, 0.02)
        assert alerts["victim"] == 0, (griefers, converge, seed, alerts)
        assert alerts["griefer"] > 0, (griefers, converge, seed, alerts)


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
    assert notes("detection: {crosskey: {kept: 100, min_neighbours: 101}}")
    assert notes("detection: {crosskey: {kept: 100, min_neighbours: 100}}") == []
    assert notes("detection: {similarity: {min_neighbours: 200}, crosskey: {kept: 150}}")


def _selfpad(rng: np.random.Generator, steps: int, pads: int, noise: float = 0.002,
             keys: int = 20) -> tuple[list[np.ndarray], list[str]]:  # fmt: skip
    """A search over ``keys`` keys whose each step is followed by ``pads`` near-copies
    (N(0, ``noise``)) sent by the step's own key: each key's rows read as near-copies of
    its last, as an app polling one camera (i23f's ``sybilselfpad``)."""
    qs, who = [], []
    for i, q in enumerate(_search(rng, steps)):
        for p in range(pads + 1):
            qs.append((q + rng.normal(0, noise, DIMS) * (p > 0)).astype(np.float32))
            who.append(f"sybil-{i % keys}")
    return qs, who


def _first_of(mon: Monitor, qs: list[np.ndarray], who: list[str]) -> int | None:
    """The query number of the first ``crosskey`` alert of any key."""
    for i, (q, k) in enumerate(zip(qs, who, strict=True)):
        if "crosskey" in _send(mon, k, q):
            return i + 1
    return None


def test_a_search_whose_keys_pad_their_own_steps_with_near_copies_is_flagged(
    monkeypatch: Any,
) -> None:
    """Padding makes each key's rows near-copies of its last (the dense-stream excuse),
    but no other key's row is near them: other keys' rows are other steps. Pads 1, 2,
    4, noise up to 0.005, 20 or 50 keys."""
    for pads, noise, keys, seed in ((2, 0.002, 20, 0), (1, 0.002, 20, 1), (4, 0.005, 20, 2),
                                    (2, 0.002, 50, 3)):  # fmt: skip
        qs, who = _selfpad(np.random.default_rng(seed), 300 // (pads + 1), pads, noise, keys)
        mon = Monitor(Detection(), shape=[DIMS])
        _warm(mon, np.random.default_rng(seed), [f"sybil-{k}" for k in range(keys)])
        first = _first_of(mon, qs, who)
        assert first is not None and first <= 150, (pads, noise, keys, first)
    monkeypatch.setattr(crosskey, "SHARED", np.inf)  # dense on each key's own rows alone
    qs, who = _selfpad(np.random.default_rng(0), 100, 2)
    mon = Monitor(Detection(), shape=[DIMS])
    _warm(mon, np.random.default_rng(0), [f"sybil-{k}" for k in range(20)])
    assert _first_of(mon, qs, who) is None


def _webcam(rng: np.random.Generator, n: int) -> np.ndarray:
    """A public webcam's ``n`` frames: a dark background (a third of it black, where
    copies' noise is clipped), a bright object moving across it, sensor noise, 8 bits."""
    bg = rng.uniform(0.0, 0.6, DIMS) * (rng.random(DIMS) < 0.66)
    t = np.arange(DIMS)
    out = []
    for i in range(n):
        obj = 0.5 * np.exp(-(((t - i % (DIMS + 16) + 8) / 4.0) ** 2))
        f = np.clip(bg + obj + rng.normal(0, 0.004, DIMS), 0, 1)
        out.append(np.round(f * 255) / 255)
    return np.asarray(out, dtype=np.float32)


def _griefed(griefers: int, noise: float, seed: int, n: int = 80) -> dict[str, int]:
    """Before each of the webcam's frames (the victim's key) ``griefers`` keys send it
    with noise N(0, ``noise``) of their own, clipped: crosskey alerts of the victim and
    of the griefers."""
    rng = np.random.default_rng(seed)
    mon = Monitor(_crosskey_only(), shape=[DIMS])
    alerts = {"victim": 0, "griefer": 0}
    for f in _webcam(rng, n):
        for g in range(griefers):
            copy = np.clip(f + rng.normal(0, noise, DIMS), 0, 1)
            alerts["griefer"] += "crosskey" in _send(mon, f"griefer-{g}", copy)
        alerts["victim"] += "crosskey" in _send(mon, "webcam", f)
    return alerts


def test_griefers_sending_a_webcams_frames_first_cannot_get_its_owner_flagged(
    monkeypatch: Any,
) -> None:
    """The owner's frames move (an object crosses the scene) and 10 griefers' copies of
    each frame came first: the owner follows their move, keeping its offset from them
    (their clipped noise biases them), so it makes no step of its own."""
    alerts = _griefed(10, 0.03, 1)
    assert alerts["victim"] == 0 and alerts["griefer"] > 0, alerts
    monkeypatch.setattr(crosskey, "FOLLOW", 0.0)  # without the follow rule
    assert _griefed(10, 0.03, 1)["victim"] > 10


def test_a_search_whose_accounts_follow_each_step_is_still_flagged() -> None:
    """The follow rule's attacker: each step sent first by one account (in turn) and then
    by 2 others, each with a fixed bias of its own, as griefers copy a webcam: still
    flagged by query 60 (at 30, as before the rule). With 5 followers a step nothing
    flags it, before the rule as after (their fixed biases: few directions)."""
    rng = np.random.default_rng(7)
    keys = [f"sybil-{k}" for k in range(20)]
    bias = rng.normal(0, 0.01, (20, DIMS))
    mon = Monitor(Detection(), shape=[DIMS])
    _warm(mon, rng, keys)
    qs, who = [], []
    for i, q in enumerate(_search(rng, 100)):
        qs.append(q)
        who.append(keys[i % 20])
        for k in range(i + 1, i + 3):
            qs.append((q + bias[k % 20] + rng.normal(0, 0.002, DIMS)).astype(np.float32))
            who.append(keys[k % 20])
    first = _first_of(mon, qs, who)
    assert first is not None and first <= 60, first
