"""Gateway state survives restarts: budgets, blocks and detector histories (issue 19)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from typer.testing import CliRunner

from mlwarden.cli.main import app as cli
from mlwarden.serve.auth import hash_key, new_key
from mlwarden.serve.log import read_records, read_state

_SERVER = """
import sys
from pathlib import Path
import numpy as np
from mlwarden.core.target import CallableTarget
from mlwarden.serve.config import load_config
from mlwarden.serve.server import run_gateway

w = np.random.default_rng(0).normal(size=(64, 10))
target = CallableTarget(lambda x: x.reshape(len(x), -1) @ w, access="score", output="logits")
cfg_path = Path(sys.argv[1])
run_gateway(target, load_config(cfg_path), host="127.0.0.1", port=0, base_dir=cfg_path.parent)
"""


def _start(cfg: Path) -> tuple[subprocess.Popen[str], str]:
    (cfg.parent / "server.py").write_text(_SERVER)
    proc = subprocess.Popen(
        [sys.executable, str(cfg.parent / "server.py"), str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "ready at " in line:
            return proc, line.split("ready at ")[1].split()[0]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("gateway subprocess did not start")


def _near_duplicates(n: int, seed: int = 0) -> np.ndarray:
    """A probing stream: each query moves one pixel of the last a little."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.8, (1, 8, 8))
    out = []
    for _ in range(n):
        x = x.copy()
        x[0, rng.integers(8), rng.integers(8)] += rng.choice([-0.02, 0.02])
        out.append(x)
    return np.stack(out)


def _post(url: str, key: str, x: np.ndarray) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/predict",
        json={"inputs": x.tolist()},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_budgets_and_blocks_survive_kill_9(tmp_path: Path) -> None:
    spender, prober = new_key(), new_key()
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        "input: {shape: [1, 8, 8], range: [0, 1]}\n"
        "limits: {rate: 1000, burst: 1000, budget: 20, window_s: 3600}\n"
        "detection: {action: block}\n"
        f"keys: {{spender: {{hash: '{hash_key(spender)}'}}, "
        f"prober: {{hash: '{hash_key(prober)}'}}}}\n"
        "audit: {path: audit.db}\n"
    )
    x = np.random.default_rng(1).uniform(0, 1, (16, 1, 8, 8))
    proc, url = _start(cfg)
    try:
        assert _post(url, spender, x).status_code == 200  # 16 of 20 spent
        codes = [_post(url, prober, q[None]).status_code for q in _near_duplicates(12)]
        assert 403 in codes
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    proc, url = _start(cfg)
    try:
        over = _post(url, spender, x[:5])
        assert over.status_code == 429 and "budget" in over.json()["detail"]
        assert _post(url, spender, x[:4]).status_code == 200
        fresh = np.random.default_rng(9).uniform(0, 1, (1, 1, 8, 8))
        assert _post(url, prober, fresh).status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert ("prober", "blocked") in read_state(tmp_path / "audit.db")
    result = CliRunner().invoke(cli, ["gateway", "unblock", "prober", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "unblocked" in result.output
    assert ("prober", "blocked") not in read_state(tmp_path / "audit.db")
    assert ("spender", "limits") in read_state(tmp_path / "audit.db")


def test_detector_history_survives_a_restart(gw_config, keys, serve, sklearn_target, tmp_path):
    # the count alone: the still-ball rule (on by default since session 7) leaves one
    # input resent with noise alone; the history's survival is what is tested
    cfg = gw_config(detection={"blacklight": {"enabled": False}, "prada": {"enabled": False},
                               "similarity": {"stationary": False}})  # fmt: skip
    rng = np.random.default_rng(3)
    x0 = rng.uniform(0.3, 0.7, (1, 8, 8))
    noisy = np.clip(x0 + rng.normal(0, 0.03, (30, 1, 8, 8)), 0, 1)
    live = serve(sklearn_target, cfg)
    for q in noisy[:15]:  # fewer than the 20 neighbours that flag
        assert _post(live.url, keys["scores"], q[None]).status_code == 200
    live.stop()
    live = serve(sklearn_target, cfg)
    for q in noisy[15:]:
        _post(live.url, keys["scores"], q[None])
    rows = [r for r in read_records(tmp_path / "audit.db") if r["key"] == "scores"]
    assert "similarity" in "".join(r["alerts"] for r in rows[15:])
    assert not any(r["alerts"] for r in rows[:15])


def test_keys_added_or_removed_while_serving_take_effect(tmp_path, serve, sklearn_target, digits):
    from mlwarden.serve.config import load_config, save_config

    cfg = tmp_path / "gw.yaml"
    old = new_key()
    cfg.write_text(
        "input: {shape: [1, 8, 8], range: [0, 1], max_batch: 16}\n"
        "limits: {rate: 1000, burst: 1000}\n"
        f"keys: {{old: {{hash: '{hash_key(old)}'}}}}\naudit: {{path: audit.db}}\n"
    )
    cfg.chmod(0o600)
    live = serve(sklearn_target, load_config(cfg), cfg)
    result = CliRunner().invoke(cli, ["gateway", "add-key", "fresh", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    fresh = result.output.split()[0]
    time.sleep(1.1)  # the file is checked at most once a second
    assert _post(live.url, fresh, digits[2][:1]).status_code == 200
    edited = load_config(cfg)
    del edited.keys["old"]  # revoked by the operator
    save_config(edited, cfg)
    time.sleep(1.1)
    assert _post(live.url, old, digits[2][:1]).status_code == 401
    assert _post(live.url, fresh, digits[2][1:2]).status_code == 200
