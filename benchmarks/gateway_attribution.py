import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# a sibling script (run from benchmarks/): the same baseline as the load benchmark
from gateway_load import bare_app
from mlwarden.core.data import load_dataset
from mlwarden.core.models import SmallCNN
from mlwarden.core.target import TorchTarget
from mlwarden.serve.app import create_app
from mlwarden.serve.auth import hash_key
from mlwarden.serve.config import GatewayConfig

torch.set_num_threads(1)
ds = load_dataset("digits")
target = TorchTarget(SmallCNN().eval(), access="score")
rng = np.random.default_rng(0)
xs = np.clip(
    np.concatenate([ds.x] * 3) + rng.normal(0, 0.01, (3 * len(ds.x), 1, 8, 8)), 0, 1
).astype(np.float32)
bodies = [json.dumps({"inputs": [x.tolist()]}).encode() for x in xs]
tmp = Path(tempfile.mkdtemp())


def gw(det, aud, name):
    (tmp / name).mkdir()
    cfg = GatewayConfig.model_validate(
        {
            "input": {"shape": [1, 8, 8], "range": [0, 1]},
            "limits": {"rate": 1e9, "burst": 10**9},
            "keys": {f"a{i}": {"hash": hash_key(f"k{i}"), "role": "scores"} for i in range(8)},
            "audit": {"enabled": aud, "path": str(tmp / name / "audit.db")},
            "detection": {
                "blacklight": {"enabled": det},
                "prada": {"enabled": det},
                "similarity": {"enabled": det},
            },
        }
    )
    return create_app(target, cfg)


bare = bare_app(target)


apps = {
    "bare": bare,
    "gateway": gw(True, True, "g"),
    "no-det": gw(False, True, "n"),
    "neither": gw(False, False, "b"),
}
pos = {k: 0 for k in apps}


async def drive(app, name, n):
    for _ in range(n):
        i = pos[name]
        pos[name] += 1
        body = bodies[i % len(bodies)]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/predict",
            "raw_path": b"/v1/predict",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"gw"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"authorization", f"Bearer k{i % KEYS}".encode()),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        assert await _call(app, scope, body) == 200


async def _call(app, scope, body: bytes) -> int:
    """One request through the ASGI app; its status."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)

    status = []

    async def send(msg):
        if msg["type"] == "http.response.start":
            status.append(msg["status"])

    await app(scope, receive, send)
    return status[0]


N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
R = int(sys.argv[2]) if len(sys.argv) > 2 else 7
only = sys.argv[3].split(",") if len(sys.argv) > 3 else list(apps)
# WARM > 0: one key, first fed WARM distinct inputs (its detector histories full at
# 10,000), then measured on further distinct ones; the gateway skips detection on exact
# repeats, so a measurement at a full history needs inputs never sent before.
WARM = int(sys.argv[4]) if len(sys.argv) > 4 else 0
KEYS = 8
if WARM:
    from gateway_load import _distinct_inputs, _load_inputs

    KEYS = 1
    pool = _distinct_inputs(ds.x.astype(np.float32))[rng.permutation(5 * len(ds.x))]
    xs = _load_inputs(pool, WARM + 30 + N * R)
    bodies = [json.dumps({"inputs": [x.tolist()]}).encode() for x in xs]
cpu = {k: [] for k in only}


async def main():
    for name in only:
        await drive(apps[name], name, 30 + WARM)
    for _ in range(R):
        for name in only:
            p0 = time.process_time()
            await drive(apps[name], name, N)
            cpu[name].append((time.process_time() - p0) * 1000 / N)


asyncio.run(main())
for k, v in cpu.items():
    print(
        f"{k:9s} min {min(v):.3f} med {sorted(v)[len(v) // 2]:.3f}  (+{min(v) - min(cpu[only[0]]):.3f})"
    )
