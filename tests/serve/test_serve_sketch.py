"""The still-ball rule asks a secret sketch of the raw input too (issue 19).

A search whose steps have zero mean over every block of :func:`reduce` is one point to
the reduced detectors; with fresh noise a query (projected the same way) it was excused
as one input resent with noise (``nullnoise`` of
``benchmarks/gateway_detection_realworld.py``). :mod:`mlwarden.serve.sketch` excuses a
still cloud only when it is still in 32 secret projections of the raw input as well.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlwarden.serve.app import Gateway
from mlwarden.serve.config import Detection
from mlwarden.serve.log import read_state
from mlwarden.serve.monitor import Monitor
from mlwarden.serve.sketch import STATE_KEY, STATE_KIND, Sketch, new_secret, quiet

SHAPE = (1, 28, 28)
_STARTS = (np.arange(128) * 784) // 128  # reduce's blocks at the default max_dims
_SIZES = np.diff(np.append(_STARTS, 784))
_LABELS = np.zeros(10, np.int64)


def _null(d: np.ndarray) -> np.ndarray:
    """``d`` with zero mean over each of reduce's blocks: invisible to the reduced view."""
    flat = d.reshape(-1)
    return (flat - np.repeat(np.add.reduceat(flat, _STARTS) / _SIZES, _SIZES)).reshape(SHAPE)


def _null_search(seed: int, n: int = 300, dither: float = 0.005) -> np.ndarray:
    """Square-like block steps of 0.05 in the null space (a step kept 3 times in 10, as a
    search keeps what lowers its score), fresh projected noise ``dither`` a query."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0.3, 0.7, SHAPE)
    delta, sent = np.zeros(SHAPE), []
    for _ in range(n):
        cand = delta.copy()
        r, c = rng.integers(0, 24, 2)
        cand[0, r : r + 4, c : c + 4] += rng.choice([-0.05, 0.05])
        cand = _null(np.clip(cand, -0.1, 0.1))
        sent.append(x0 + cand + _null(rng.normal(0, dither, SHAPE)))
        if rng.random() < 0.3:
            delta = cand
    return np.stack(sent).astype(np.float32)


def _monitor(sketch: bool = True, stationary: bool = True) -> Monitor:
    # MNIST's calibrated settings (radius 0.05, Blacklight 0.025 / 40); PRADA off
    det = Detection.model_validate({"prada": {"enabled": False},
                                    "similarity": {"radius": 0.05, "sketch": sketch,
                                                   "stationary": stationary},
                                    "blacklight": {"quantization": 0.025, "threshold": 40}})  # fmt: skip
    return Monitor(det, shape=list(SHAPE), scale=1.0)


def _first(mon: Monitor, xs: np.ndarray) -> int | None:
    """The first query of ``xs`` flagged (batches of 10: the alerts of one-query calls)."""
    for i in range(0, len(xs), 10):
        found = mon.inspect("k", xs[i : i + 10], _LABELS[: len(xs[i : i + 10])])
        hits = [i + j for js in found.values() for j in js if i + j >= 0]
        if hits:
            return min(hits) + 1
    return None


def test_a_search_in_the_reductions_null_space_is_flagged() -> None:
    xs = _null_search(0)
    assert _first(_monitor(sketch=False), xs) is None  # excused as one input resent
    first = _first(_monitor(), xs)
    assert first is not None and first <= 30


def test_one_input_resent_with_fresh_noise_is_still_excused() -> None:
    rng = np.random.default_rng(1)
    xs = (rng.uniform(0.3, 0.7, SHAPE) + rng.normal(0, 0.01, (200, *SHAPE))).astype(np.float32)
    assert _first(_monitor(stationary=False), xs) is not None  # the count alone flags it
    assert _first(_monitor(), xs) is None


def test_the_sketch_test_passes_noise_and_fails_a_drifting_centre() -> None:
    rng = np.random.default_rng(0)
    assert quiet(rng.normal(0, 0.01, (40, 32)))
    assert not quiet(np.linspace(0, 0.05, 40)[:, None] + rng.normal(0, 0.01, (40, 32)))
    # too few rows to tell: the reduced view decides alone
    assert quiet(np.linspace(0, 0.05, 15)[:, None] + rng.normal(0, 0.01, (15, 32)))


def test_sketches_depend_on_the_secret_and_survive_dump_and_load() -> None:
    secret = new_secret()
    x = np.random.default_rng(2).uniform(0, 1, (3, *SHAPE)).astype(np.float32)
    assert np.allclose(Sketch(secret).of(x, 1.0), Sketch(secret).of(x, 1.0))
    assert not np.allclose(Sketch(secret).of(x, 1.0), Sketch(new_secret()).of(x, 1.0))
    mon = _monitor()
    mon.use_secret(secret)
    xs = _null_search(3, n=40)
    for i in range(0, 40, 10):
        mon.inspect("k", xs[i : i + 10], _LABELS)
    blob = mon.dump("k")
    assert blob is not None and secret not in blob
    ring = mon._keys["k"].sketch
    assert ring is not None and ring.known.sum() == 40
    same, other = _monitor(), _monitor()
    same.use_secret(secret)
    same.load("k", blob)
    other.load("k", blob)  # another gateway's secret: its sketches are not comparable
    restored = same._keys["k"].sketch
    assert restored is not None and np.allclose(restored.rows, ring.rows, atol=1e-3)
    assert restored.known.sum() == 40
    assert other._keys["k"].sketch is not None and not other._keys["k"].sketch.known.any()


def _gateway(tmp_path: Path, gw_config: Any, sklearn_target: Any) -> Gateway:
    # max_dims 32: the 8x8 inputs have more values than the reduced vector, so sketched
    cfg = gw_config(detection={"similarity": {"max_dims": 32}})
    return Gateway(sklearn_target, cfg, base_dir=tmp_path)


def test_the_secret_survives_a_restart_and_differs_per_gateway(
    tmp_path: Path, gw_config: Any, sklearn_target: Any, keys: dict[str, str]
) -> None:
    first = _gateway(tmp_path, gw_config, sklearn_target)
    secret = read_state(tmp_path / "audit.db")[(STATE_KEY, STATE_KIND)]
    assert len(secret) == 32
    tag = first.monitor.sketch.tag if first.monitor.sketch else None
    first.close()
    again = _gateway(tmp_path, gw_config, sklearn_target)
    assert again.monitor.sketch is not None and again.monitor.sketch.tag == tag
    assert read_state(tmp_path / "audit.db")[(STATE_KEY, STATE_KIND)] == secret
    again.close()
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = Gateway(sklearn_target, gw_config(audit={"path": str(other_dir / "audit.db")}))
    assert other.monitor.sketch is not None and other.monitor.sketch.tag != tag
    other.close()
    assert (tmp_path / "audit.db").stat().st_mode & 0o077 == 0


def test_the_secret_is_in_no_log_metric_blob_or_config(
    tmp_path: Path, gw_config: Any, sklearn_target: Any, keys: dict[str, str],
    serve: Any, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    cfg = gw_config(detection={"similarity": {"max_dims": 32}})
    caplog.set_level(logging.DEBUG)
    live = serve(sklearn_target, cfg)
    xs = np.random.default_rng(4).uniform(0, 1, (40, 1, 8, 8))
    auth = {"Authorization": f"Bearer {keys['scores']}"}
    for i in range(0, 40, 4):
        r = httpx.post(f"{live.url}/v1/predict", json={"inputs": xs[i : i + 4].tolist()},
                       headers=auth, timeout=10)  # fmt: skip
        assert r.status_code == 200
    metrics = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {keys['metrics']}"},
                        timeout=10).text  # fmt: skip
    live.stop()
    state = read_state(tmp_path / "audit.db")
    secret = state[(STATE_KEY, STATE_KIND)]
    blob = state[("scores", "detector")]
    forms = [
        secret.hex(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
    ]
    text = (
        caplog.text + metrics + cfg.model_dump_json() + repr(live.app.state.gateway.monitor.sketch)
    )
    assert not any(f in text for f in forms)
    assert secret not in blob and secret not in caplog.text.encode("latin-1", "replace")
