"""Fixtures for the gateway tests: a small digits model and a real uvicorn server."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from sklearn.linear_model import LogisticRegression

from mlwarden.core.data import load_dataset
from mlwarden.core.target import SklearnTarget, Target
from mlwarden.serve.app import KERNELS_WAIT_S, create_app
from mlwarden.serve.auth import hash_key, new_key
from mlwarden.serve.config import GatewayConfig
from mlwarden.serve.server import server_config

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def bench_module(name: str) -> Any:
    """``benchmarks/<name>.py`` imported by path, with benchmarks/ on ``sys.path`` for its
    own imports, and registered under its name (its dataclasses look their module up
    there)."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits (N, 1, 8, 8) in [0, 1], split 75/25 with a fixed seed."""
    ds = load_dataset("digits")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(ds.x))
    cut = int(0.75 * len(idx))
    tr, te = idx[:cut], idx[cut:]
    return ds.x[tr], ds.y[tr], ds.x[te], ds.y[te]


@pytest.fixture(scope="session")
def digits_model(digits: tuple[np.ndarray, ...]) -> LogisticRegression:
    xtr, ytr, _, _ = digits
    return LogisticRegression(max_iter=300).fit(xtr.reshape(len(xtr), -1), ytr)


class LiveServer:
    """A real uvicorn server in a thread on 127.0.0.1 and a free port."""

    def __init__(self, app: Any) -> None:
        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(server_config(app))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        # serve listens once its detector kernels are compiled (<= KERNELS_WAIT_S; a cold
        # numba cache on a loaded CI box takes tens of seconds)
        deadline = time.monotonic() + KERNELS_WAIT_S + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def keys() -> dict[str, str]:
    """Fresh keys for the built-in roles (name == role)."""
    return {role: new_key() for role in ("labels", "scores", "admin", "metrics")}


def make_config(tmp_path: Path, keys: dict[str, str], **overrides: Any) -> GatewayConfig:
    raw: dict[str, Any] = {
        "input": {
            "shape": [1, 8, 8],
            "range": [0.0, 1.0],
            "max_batch": 16,
            "max_body_bytes": 65536,
        },
        "limits": {"rate": 1000.0, "burst": 1000, "budget": 100000},
        "keys": {name: {"hash": hash_key(k), "role": name} for name, k in keys.items()},
        "audit": {"path": str(tmp_path / "audit.db")},
    }
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **value}
        else:
            raw[section] = value
    return GatewayConfig.model_validate(raw)


@pytest.fixture
def gw_config(tmp_path: Path, keys: dict[str, str]) -> Callable[..., GatewayConfig]:
    """``gw_config(section=value, ...)``: the test config with sections overridden."""

    def build(**overrides: Any) -> GatewayConfig:
        return make_config(tmp_path, keys, **overrides)

    return build


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Target, GatewayConfig], LiveServer]]:
    started: list[LiveServer] = []

    def start(target: Target, config: GatewayConfig, config_path: Path | None = None) -> LiveServer:
        app = create_app(
            target, config, base_dir=tmp_path, model_version="test-1", config_path=config_path
        )
        server = LiveServer(app)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sklearn_target(digits_model: LogisticRegression) -> SklearnTarget:
    return SklearnTarget(digits_model, access="score")


def _noisy_random_search(
    model: Any, x0: np.ndarray, y0: int, n: int, sigma: float, seed: int | np.random.Generator
) -> list[np.ndarray]:
    """The adaptive attack of issue 19: random search (Linf 0.1, 2x2 windows, keep a step
    when the true class's probability drops) with fresh Gaussian noise on every query.
    ``seed``: an int, or a generator to draw from (and advance)."""
    rng = np.random.default_rng(seed)
    delta, best, sent = np.zeros_like(x0), np.inf, []
    for _ in range(n):
        cand = delta.copy()
        r, c = rng.integers(0, 7, 2)
        cand[..., r : r + 2, c : c + 2] = rng.choice([-0.1, 0.1])
        q = np.clip(x0 + cand + rng.normal(0, sigma, x0.shape), 0, 1).astype(np.float32)
        sent.append(q)
        p = model.predict_proba(q.reshape(1, -1))[0, y0]
        if p < best:
            best, delta = p, cand
    return sent


@pytest.fixture(scope="session")
def noisy_search() -> Callable[..., list[np.ndarray]]:
    """:func:`_noisy_random_search`, for the monitor tests."""
    return _noisy_random_search
