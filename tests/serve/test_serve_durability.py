"""The audit log loses no answered request when the server is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlwarden.serve.auth import hash_key, new_key
from mlwarden.serve.log import read_records

_SERVER = """
import sys
import time
from pathlib import Path
import numpy as np
from mlwarden.core.target import CallableTarget
from mlwarden.serve.config import load_config
from mlwarden.serve.log import AuditLog
from mlwarden.serve.server import run_gateway

# A slow disk: each group commit takes 20 ms more, so records wait in the queue and a
# gateway that answered before committing would lose them on kill -9.
_write = AuditLog._write
def _slow_write(self, db, batch):
    time.sleep(0.02)
    _write(self, db, batch)
AuditLog._write = _slow_write

w = np.random.default_rng(0).normal(size=(64, 10))
target = CallableTarget(lambda x: x.reshape(len(x), -1) @ w, access="score", output="logits")
cfg_path = Path(sys.argv[1])
run_gateway(target, load_config(cfg_path), host="127.0.0.1", port=0, base_dir=cfg_path.parent)
"""


def _start(tmp_path: Path, key: str, synchronous: str) -> tuple[subprocess.Popen[str], str]:
    (tmp_path / "gw.yaml").write_text(
        "input: {shape: [1, 8, 8], range: [0, 1]}\n"
        "limits: {rate: 100000, burst: 100000}\n"
        f"keys: {{bench: {{hash: '{hash_key(key)}', role: scores}}}}\n"
        f"audit: {{path: audit.db, synchronous: {synchronous}}}\n"
    )
    (tmp_path / "server.py").write_text(_SERVER)
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "server.py"), str(tmp_path / "gw.yaml")],
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


def _hammer_then_kill(
    proc: subprocess.Popen[str],
    url: str,
    key: str,
    inputs: Callable[[np.random.Generator], list],
    want: int,
    wait_s: float,
) -> list[str]:
    """8 clients post ``inputs(rng)`` until ``want`` requests were answered (or
    ``wait_s`` passed); the server is killed with SIGKILL while they are still sending.
    Returns the request ids of every answered request."""
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post(f"{url}/v1/predict", json={"inputs": inputs(rng)})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        answered.append(r.headers["X-Request-Id"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + wait_s
    while len(answered) < want and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    return answered


@pytest.mark.parametrize("synchronous", ["normal", "full"])  # inline commits / writer thread
def test_every_answered_request_survives_kill_9(tmp_path: Path, synchronous: str) -> None:
    key = new_key()
    proc, url = _start(tmp_path, key, synchronous)
    x = np.random.default_rng(1).uniform(0, 1, (2, 1, 8, 8)).tolist()
    answered = _hammer_then_kill(proc, url, key, lambda rng: x, want=120, wait_s=20)
    assert proc.stdout is not None
    output = proc.stdout.read()
    assert len(answered) >= 120
    stored = {r["request_id"] for r in read_records(tmp_path / "audit.db")}
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} of {len(answered)} answered requests not in the audit log"
    assert key not in output


def test_detector_histories_written_off_the_loop_survive_kill_9(tmp_path: Path) -> None:
    """Distinct queries from 8 clients: the key's detector history (about 1 MB at 64
    values a query) is stored every 1,024 distinct queries by a thread, on a slow disk,
    while the clients go on; after kill -9 every answered row is there and the stored
    history loads, holding at least the queries of the last save."""
    from mlwarden.serve.config import Detection
    from mlwarden.serve.log import read_state
    from mlwarden.serve.monitor import Monitor

    key = new_key()
    proc, url = _start(tmp_path, key, "normal")
    # 16 distinct queries a request; 200 requests = 3,200 queries: 3 saves
    answered = _hammer_then_kill(
        proc, url, key, lambda rng: rng.uniform(0, 1, (16, 1, 8, 8)).tolist(), 200, 60
    )
    assert len(answered) >= 200
    stored = {r["request_id"] for r in read_records(tmp_path / "audit.db")}
    assert not set(answered) - stored
    blob = read_state(tmp_path / "audit.db")[("bench", "detector")]
    mon = Monitor(Detection(), shape=[1, 8, 8])
    mon.load("bench", blob)
    sim = mon._keys["bench"].similarity
    assert sim is not None and sim._filled >= 1024
