"""The gateway's request path in process: CPU a request on the event loop and in all.

Part ``path``: ``Gateway.predict`` driven straight through ASGI (no sockets, no HTTP
client: what is measured is the gateway's own path) at 8 concurrent requests on
uvloop, with 8 keys that have a budget (so the budget row is written every request),
the audit log on and the detectors off by default (``--detect`` on), a logistic
regression on digits as the model. It prints, per round and as medians: process CPU
a request, the event loop thread's CPU a request, the loop's voluntary context
switches a request (each is a wait, mostly for the GIL) and requests a second.
Compare two source trees by running it under each ``PYTHONPATH`` *at the same time*
(both see the same machine load), e.g.::

    PYTHONPATH=old/src python benchmarks/gateway_path.py & PYTHONPATH=src python benchmarks/gateway_path.py; wait

Part ``hop``: the thread hand-off alone, ``loop.run_in_executor`` on a
``ThreadPoolExecutor`` against :class:`mlwarden.serve.workers.WorkerPool`, both with
6 threads and 8 concurrent callers, alternated in one process (``--work`` loop
iterations of Python work in each call; 0: the hop alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import uvloop


def _gateway(detect: bool) -> Any:
    from sklearn.linear_model import LogisticRegression

    from mlwarden.core.data import load_dataset
    from mlwarden.core.target import SklearnTarget
    from mlwarden.serve.app import create_app
    from mlwarden.serve.auth import hash_key
    from mlwarden.serve.config import GatewayConfig

    ds = load_dataset("digits")
    x = ds.x.astype(np.float32)
    model = LogisticRegression(max_iter=200).fit(x.reshape(len(x), -1), ds.y)
    cfg = GatewayConfig.model_validate({
        "input": {"shape": [1, 8, 8], "range": [0, 1]},
        "limits": {"rate": 1e9, "burst": 10**9, "budget": 10**9},
        "keys": {f"k{i}": {"hash": hash_key(f"key{i}"), "role": "scores"} for i in range(8)},
        "audit": {"path": str(Path(tempfile.mkdtemp()) / "audit.db")},
        "detection": {d: {"enabled": detect} for d in ("blacklight", "prada", "similarity")},
    })  # fmt: skip
    rng = np.random.default_rng(0)
    noisy = np.concatenate([x] * 12) + rng.uniform(0, 0.01, (12 * len(x), *x.shape[1:]))
    bodies = [json.dumps({"inputs": [v.tolist()]}).encode() for v in noisy.clip(0, 1)]
    return create_app(SklearnTarget(model, access="score"), cfg).state.gateway, bodies


async def _drive(gateway: Any, bodies: list[bytes], n: int, offset: int) -> None:
    from starlette.requests import Request

    async def client(k: int) -> None:
        for j in range(n // 8):
            body = bodies[(offset + 8 * j + k) % len(bodies)]
            headers = [(b"host", b"127.0.0.1"), (b"accept", b"*/*"), (b"connection", b"keep-alive"),
                       (b"content-type", b"application/json"),
                       (b"authorization", f"Bearer key{k}".encode()),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": headers}

            async def receive(body: bytes = body) -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            answer = await gateway.predict(Request(scope, receive))
            assert answer.status == 200, answer.body

    await asyncio.gather(*[client(k) for k in range(8)])


def _switches() -> int:
    status = Path(f"/proc/self/task/{threading.get_native_id()}/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("voluntary_ctxt")).split()[1])


def path(n: int, rounds: int, detect: bool) -> None:
    gateway, bodies = _gateway(detect)
    uvloop.run(_drive(gateway, bodies, 400, 0))  # warm-up
    out: dict[str, list[float]] = {"cpu_us": [], "loop_us": [], "loop_switches": [], "rps": []}
    for r in range(rounds):
        s0, l0, p0, w0 = _switches(), time.thread_time(), time.process_time(), time.perf_counter()
        uvloop.run(_drive(gateway, bodies, n, 1000 + r * n))
        out["cpu_us"].append((time.process_time() - p0) / n * 1e6)
        out["loop_us"].append((time.thread_time() - l0) / n * 1e6)
        out["loop_switches"].append((_switches() - s0) / n)
        out["rps"].append(n / (time.perf_counter() - w0))
        print(
            f"  round {r + 1}: " + "  ".join(f"{k} {v[-1]:.2f}" for k, v in out.items()), flush=True
        )
    print("median: " + "  ".join(f"{k} {statistics.median(v):.2f}" for k, v in out.items()))
    gateway.close()


def _work(iterations: int) -> int:
    s = 0
    for i in range(iterations):
        s += i
    return s


async def _hops(run: Any, n: int, work: int) -> None:
    async def caller() -> None:
        for _ in range(n // 8):
            await run(_work, work)

    await asyncio.gather(*[caller() for _ in range(8)])


def hop(n: int, rounds: int, work: int) -> None:
    from mlwarden.serve.workers import WorkerPool

    tpe, pool = ThreadPoolExecutor(6), WorkerPool(6, "bench")

    def executor(fn: Any, *args: Any) -> Any:
        return asyncio.get_running_loop().run_in_executor(tpe, fn, *args)

    kinds = {"run_in_executor": executor, "WorkerPool": pool.run}
    got: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        for name in list(kinds) if r % 2 == 0 else list(kinds)[::-1]:
            t0 = time.process_time()
            uvloop.run(_hops(kinds[name], n, work))
            got[name].append((time.process_time() - t0) / n * 1e6)
    for name, v in got.items():
        print(
            f"{name:16s} median {statistics.median(v):6.1f} us CPU a call  ({' '.join(f'{x:.1f}' for x in v)})"
        )
    tpe.shutdown()
    pool.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("path", "hop"), default="path")
    ap.add_argument("--requests", type=int, default=3000, help="requests (or hops) a round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--detect", action="store_true", help="detectors on (path)")
    ap.add_argument("--work", type=int, default=0, help="loop iterations in each call (hop)")
    args = ap.parse_args()
    if args.part == "path":
        path(args.requests, args.rounds, args.detect)
    else:
        hop(args.requests, args.rounds, args.work)


if __name__ == "__main__":
    main()
