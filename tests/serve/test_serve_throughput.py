"""Where the served gateway's CPU goes, and the thread pool it runs models in (issue 19).

``mlwarden_cpu_seconds_total{stage}`` splits the CPU of the served gateway into the
model, the detectors and the whole process (``benchmarks/gateway_load.py`` reads it
to attribute the gap to a bare endpoint); the pool that runs models and detectors has
one thread more than the usable cores for a local model (more only took turns and
made every stage cost more), and more for a model behind HTTP, which mostly waits.
"""

from __future__ import annotations

import os

import httpx
import pytest
from pydantic import ValidationError

from mlwarden.serve.app import _workers, create_app


def _cpu(url: str, key: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}).text
    lines = [ln for ln in text.splitlines() if ln.startswith("mlwarden_cpu_seconds_total{")]
    return {ln.split('"')[1]: float(ln.rsplit(" ", 1)[1]) for ln in lines}


def test_metrics_split_the_cpu_into_model_detectors_and_the_process(
    gw_config, keys, serve, sklearn_target, digits
):
    live = serve(sklearn_target, gw_config())
    before = _cpu(live.url, keys["admin"])
    assert set(before) == {"model", "detectors", "process"}
    xs = digits[2][:48]
    for i in range(0, len(xs), 2):  # 24 requests: three batches of 8 distinct queries
        r = httpx.post(
            f"{live.url}/v1/predict",
            json={"inputs": xs[i : i + 2].tolist()},
            headers={"Authorization": f"Bearer {keys['scores']}"},
        )
        assert r.status_code == 200
    after = _cpu(live.url, keys["admin"])
    spent = {stage: after[stage] - before[stage] for stage in after}
    assert spent["model"] > 0 and spent["detectors"] > 0
    # the stages are parts of the process's CPU, not more than it
    assert spent["model"] + spent["detectors"] <= spent["process"]


def test_the_pool_size_is_cores_plus_4_unless_server_threads_sets_it(gw_config, sklearn_target):
    cores = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    assert _workers() == min(32, cores + 4)
    gateway = create_app(sklearn_target, gw_config()).state.gateway
    assert gateway.pool._max_workers == min(32, cores + 4)
    gateway = create_app(sklearn_target, gw_config(server={"threads": 3})).state.gateway
    assert gateway.pool._max_workers == 3
    with pytest.raises(ValidationError, match="threads"):
        gw_config(server={"threads": 0})


def test_the_detectors_kernels_are_ready_before_the_first_request(
    gw_config, sklearn_target, monkeypatch
):
    """``serve`` compiles (or loads) the numba kernels during start-up, before it listens:
    compiled on the first query instead, they shared the 2 cores with the first seconds
    of traffic (keep-alive p50 12-24 ms instead of 1.3 ms, the red team's probe)."""
    from fastapi.testclient import TestClient

    from mlwarden.serve import monitor

    if os.environ.get("MLW_KERNELS", "").lower() == "numpy":
        pytest.skip("MLW_KERNELS=numpy: no kernels to compile")
    # as in a fresh process: nothing compiled, no build started
    monkeypatch.setattr(monitor, "_COMPILED", [])
    monkeypatch.setattr(monitor, "_BUILDING", [])
    app = create_app(sklearn_target, gw_config())
    assert not monitor._COMPILED
    with TestClient(app):  # runs the lifespan's start-up, sends no request
        assert monitor._COMPILED, "start-up returned before the kernels were built"
