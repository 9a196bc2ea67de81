"""Gateway benchmark: overhead under bounded loopback load, and attack detection.

Part 1 (load). The same TorchScript SmallCNN (trained on digits) is served twice, each
in its own uvicorn process: behind ``mlwarden serve`` (auth, validation, limits,
Blacklight + PRADA monitoring, output hardening, audit commit before every answer,
metrics) and behind a bare FastAPI endpoint (parse JSON, run the model in the
thread pool, return scores). A Python client sends single-input requests: one thread
sequentially for latency (p50/p99), then ``--threads`` threads for ``--duration``
seconds for throughput. Rounds alternate the order of the two servers; figures are
medians over rounds. At the end the gateway is killed with SIGKILL and every answered
request id is looked up in its audit log (lost records must be 0); 5xx must be 0.
Targets: p50 overhead <= 2 ms, throughput >= 80% of bare.

Part 1b (attribution). The bare app and the gateway (whole, without detectors,
without audit log, without both) are driven in-process through ASGI and the CPU time
per request is measured: scheduler-independent, so it shows the gateway's own cost
even on a loaded machine.

Part 2 (detection). A fresh gateway (action ``log``, so attacks run to the end).
Square (Linf, eps 0.1, score access through the ``scores`` role) and HopSkipJump
(L2, label access through the ``labels`` role) from ``mlwarden.evasion`` attack
held-out digits through :class:`~mlwarden.core.target.HttpTarget`, one key per attack
run; other keys replay every held-out digit once in random order. From the audit log:
queries until each attack key is first flagged (target <= 50) and the fraction of
replayed queries flagged (target <= 1%).

Run (about 2 minutes on 2 cores)::

    timeout 900 .venv/bin/python benchmarks/gateway_load.py --rounds 3 --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import Request  # module level: endpoint annotations resolve against module globals
from fastapi.responses import JSONResponse

SEED = 0


# -- the bare server (child process) ---------------------------------------------------
def bare_server(model_path: str) -> None:
    """A minimal FastAPI endpoint serving the same model, for comparison."""
    import uvicorn
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    from mlwarden.core.target import probabilities
    from mlwarden.supplychain import load_target

    target = load_target(model_path, access="score")
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        x = np.asarray(body["inputs"], dtype=np.float32)
        probs = await run_in_threadpool(probabilities, target, x)
        return JSONResponse({"predictions": probs.tolist()})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):  # type: ignore[no-untyped-def]
            await super().startup(sockets=sockets)
            print(f"bare server ready at http://127.0.0.1:{sock.getsockname()[1]}", flush=True)

    Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


# -- helpers ----------------------------------------------------------------------------
def _spawn(cmd: list[str]) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "ready at " in line:
            url = line.split("ready at ")[1].split()[0]
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain
            return proc, url
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"server did not start: {' '.join(cmd)}")


def _train(tmp: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    import torch

    from mlwarden.core.data import load_dataset
    from mlwarden.core.models import SmallCNN, accuracy, fit

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    ds = load_dataset("digits")
    idx = np.random.default_rng(SEED).permutation(len(ds.x))
    tr, te = idx[: int(0.75 * len(idx))], idx[int(0.75 * len(idx)) :]
    model = fit(SmallCNN(), ds.x[tr], ds.y[tr], epochs=15, seed=SEED)
    print(f"model: SmallCNN on digits, held-out accuracy {accuracy(model, ds.x[te], ds.y[te]):.3f}")
    path = tmp / "model.pt2" if False else tmp / "model.ts"
    torch.jit.save(torch.jit.trace(model, torch.from_numpy(ds.x[:1])), str(path))
    return path, ds.x[te], ds.y[te]


def _write_config(path: Path, keys: dict[str, str], action: str = "log") -> None:
    from mlwarden.serve.auth import hash_key

    lines = [
        "input: {shape: [1, 8, 8], range: [0.0, 1.0], max_batch: 64}",
        "limits: {rate: 100000, burst: 100000, budget: 100000000}",
        f"detection: {{action: {action}}}",
        "audit: {path: audit.db}",
        "keys:",
    ]
    lines += [
        f"  {name}: {{hash: '{hash_key(k)}', role: {role}}}" for name, (k, role) in keys.items()
    ]  # type: ignore[misc]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def _gateway(
    tmp: Path, model: Path, keys: dict[str, tuple[str, str]], action: str = "log"
) -> tuple[subprocess.Popen[str], str]:
    cfg = tmp / "gw.yaml"
    _write_config(cfg, keys, action)  # type: ignore[arg-type]
    return _spawn(
        [sys.executable, "-m", "mlwarden", "serve", str(model), "--config", str(cfg), "--port", "0"]
    )


class Load:
    """Latencies, statuses and answered request ids of one load phase."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.ids: list[str] = []
        self.lock = threading.Lock()


def _client(
    url: str, key: str | None, xs: np.ndarray, load: Load, stop: threading.Event, count: int | None
) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    bodies = [json.dumps({"inputs": [x.tolist()]}).encode() for x in xs]
    headers["Content-Type"] = "application/json"
    sent = 0
    # TCP_NODELAY: httpx writes headers and body separately; without it Nagle plus the
    # peer's delayed ACK adds ~40 ms to every request on loopback.
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    with httpx.Client(headers=headers, timeout=30, transport=transport) as c:
        while not stop.is_set() and (count is None or sent < count):
            body = bodies[sent % len(bodies)]
            t0 = time.perf_counter()
            r = c.post(f"{url}/v1/predict", content=body)
            dt = time.perf_counter() - t0
            sent += 1
            with load.lock:
                load.latencies.append(dt)
                load.statuses.append(r.status_code)
                if "X-Request-Id" in r.headers:
                    load.ids.append(r.headers["X-Request-Id"])


def _latency(url: str, key: str | None, xs: np.ndarray, n: int) -> Load:
    load = Load()
    _client(url, key, xs, load, threading.Event(), n)
    return load


def _throughput(
    url: str, keys: list[str | None], xs: np.ndarray, seconds: float
) -> tuple[float, Load]:
    load, stop = Load(), threading.Event()
    threads = [
        threading.Thread(target=_client, args=(url, k, xs[i :: len(keys)], load, stop, None))
        for i, k in enumerate(keys)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return len(load.latencies) / (time.perf_counter() - t0), load


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000.0, q))


# -- part 1 -----------------------------------------------------------------------------
def load_benchmark(
    tmp: Path,
    model: Path,
    xs: np.ndarray,
    rounds: int,
    threads: int,
    seconds: float,
    n_latency: int,
) -> dict[str, Any]:
    from mlwarden.serve.auth import new_key

    keys = {f"load{i}": (new_key(), "scores") for i in range(threads)}
    gw_proc, gw_url = _gateway(tmp, model, keys)
    bare_proc, bare_url = _spawn([sys.executable, __file__, "--bare-server", str(model)])
    key_list = [k for k, _ in keys.values()]
    res: dict[str, dict[str, list[float]]] = {
        s: {"p50": [], "p99": [], "rps": [], "cpu_ms": []} for s in ("bare", "gateway")
    }
    pids = {"bare": bare_proc.pid, "gateway": gw_proc.pid}
    answered: list[str] = []
    statuses: list[int] = []
    try:
        for url, k in ((bare_url, None), (gw_url, key_list[0])):
            _latency(url, k, xs, 50)  # warm-up
        for r in range(rounds):
            order = [("bare", bare_url), ("gateway", gw_url)]
            if r % 2:
                order.reverse()
            for name, url in order:
                is_gw = name == "gateway"
                cpu0 = _cpu_seconds(pids[name])
                lat = _latency(url, key_list[0] if is_gw else None, xs, n_latency)
                rps, thr = _throughput(url, key_list if is_gw else [None] * threads, xs, seconds)
                n_req = len(lat.latencies) + len(thr.latencies)
                res[name]["cpu_ms"].append((_cpu_seconds(pids[name]) - cpu0) * 1000.0 / n_req)
                res[name]["p50"].append(_pct(lat.latencies, 50))
                res[name]["p99"].append(_pct(lat.latencies, 99))
                res[name]["rps"].append(rps)
                if is_gw:
                    answered += lat.ids + thr.ids
                statuses += lat.statuses + thr.statuses
                print(
                    f"  round {r + 1} {name:8s} p50 {res[name]['p50'][-1]:.2f} ms  p99 {res[name]['p99'][-1]:.2f} ms  {rps:.0f} req/s  server CPU {res[name]['cpu_ms'][-1]:.2f} ms/req"
                )
    finally:
        os.kill(gw_proc.pid, signal.SIGKILL)  # no graceful flush: records must already be durable
        gw_proc.wait()
        bare_proc.terminate()
        bare_proc.wait()
    db = sqlite3.connect(tmp / "audit.db")
    stored = {row[0] for row in db.execute("SELECT request_id FROM requests")}
    db.close()
    med = {s: {m: statistics.median(v) for m, v in d.items()} for s, d in res.items()}
    return {
        "bare": med["bare"],
        "gateway": med["gateway"],
        "p50_overhead_ms": med["gateway"]["p50"] - med["bare"]["p50"],
        "cpu_overhead_ms": med["gateway"]["cpu_ms"] - med["bare"]["cpu_ms"],
        "throughput_ratio": med["gateway"]["rps"] / med["bare"]["rps"],
        "responses_5xx": sum(s >= 500 for s in statuses),
        "responses_not_200": sum(s != 200 for s in statuses),
        "gateway_answered": len(answered),
        "audit_lost": len(set(answered) - stored),
        "rounds": res,
    }


# -- part 1b: in-process attribution ----------------------------------------------------
def attribution(model: Path, xs: np.ndarray, n: int, rounds: int) -> dict[str, float]:
    """CPU ms per request through each app in-process (ASGI, no sockets, no scheduler noise).

    The gateway is measured whole and with its detectors and/or audit log switched off,
    so the difference to the bare app is split between its parts.
    """
    import asyncio
    import time as _time

    import torch
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    from mlwarden.core.target import probabilities
    from mlwarden.serve.app import create_app
    from mlwarden.serve.auth import hash_key
    from mlwarden.serve.config import GatewayConfig
    from mlwarden.supplychain import load_target

    torch.set_num_threads(1)
    target = load_target(str(model), access="score")
    bodies = [json.dumps({"inputs": [x.tolist()]}).encode() for x in xs]

    def gateway(detect: bool, audit: bool, tmp: Path) -> Any:
        cfg = GatewayConfig.model_validate({
            "input": {"shape": [1, 8, 8], "range": [0, 1]},
            "limits": {"rate": 1e9, "burst": 10**9},
            "keys": {"a": {"hash": hash_key("k"), "role": "scores"}},
            "audit": {"enabled": audit, "path": str(tmp / "audit.db")},
            "detection": {"blacklight": {"enabled": detect}, "prada": {"enabled": detect}},
        })  # fmt: skip
        return create_app(target, cfg)

    bare = FastAPI()

    @bare.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        x = np.asarray(json.loads(await request.body())["inputs"], dtype=np.float32)
        probs = await run_in_threadpool(probabilities, target, x)
        return JSONResponse({"predictions": probs.tolist()})

    async def drive(app: Any, count: int) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            for i in range(count):
                r = await c.post("/v1/predict", content=bodies[i % len(bodies)],
                                 headers={"Authorization": "Bearer k"})  # fmt: skip
                assert r.status_code == 200, r.text

    with tempfile.TemporaryDirectory() as d:
        apps = {"bare": bare}
        for name, det, aud in (("gateway", True, True), ("no detection", False, True),
                               ("no audit", True, False), ("neither", False, False)):  # fmt: skip
            sub = Path(d) / name.replace(" ", "_")
            sub.mkdir()
            apps[name] = gateway(det, aud, sub)
        cpu: dict[str, list[float]] = {k: [] for k in apps}
        for _ in range(rounds):
            for name, app in apps.items():
                asyncio.run(drive(app, 30))
                t0 = _time.process_time()
                asyncio.run(drive(app, n))
                cpu[name].append((_time.process_time() - t0) * 1000.0 / n)
    return {k: statistics.median(v) for k, v in cpu.items()}


# -- part 2 -----------------------------------------------------------------------------
def detection_benchmark(
    tmp: Path,
    model: Path,
    x: np.ndarray,
    y: np.ndarray,
    n_attacks: int,
    n_replay_keys: int,
    budget: int,
) -> dict[str, Any]:
    from mlwarden.core.errors import UserError
    from mlwarden.core.target import HttpTarget
    from mlwarden.evasion.attacks import HopSkipJump, Square
    from mlwarden.serve.auth import new_key

    keys: dict[str, tuple[str, str]] = {}
    for i in range(n_attacks):
        keys[f"square{i}"] = (new_key(), "scores")
        keys[f"hsj{i}"] = (new_key(), "labels")
    for k in range(n_replay_keys):
        keys[f"replay{k}"] = (new_key(), "scores")
    dtmp = tmp / "detect"
    dtmp.mkdir()
    proc, url = _gateway(dtmp, model, keys)
    success: dict[str, bool] = {}
    try:
        for i in range(n_attacks):
            xi, yi = x[i : i + 1], y[i : i + 1]
            for name, attack, access in (
                (f"square{i}", Square(norm="linf", eps=0.1, n_queries=budget, seed=i), "score"),
                (f"hsj{i}", HopSkipJump(norm="l2", max_queries=budget, seed=i), "label"),
            ):
                target = HttpTarget(f"{url}/v1/predict", headers={"Authorization": f"Bearer {keys[name][0]}"},
                                    access=access, output="probabilities" if access == "score" else "labels")  # fmt: skip
                try:
                    adv = attack.generate(target, xi, yi)
                    success[name] = bool(target.predict_labels(adv)[0] != yi[0])
                except UserError as exc:
                    print(f"  {name}: stopped ({exc})")
                    success[name] = False
                target.close()
        load = Load()
        rng = np.random.default_rng(SEED)
        threads = []
        for k in range(n_replay_keys):
            order = x[rng.permutation(len(x))]
            threads.append(
                threading.Thread(
                    target=_client,
                    args=(url, keys[f"replay{k}"][0], order, load, threading.Event(), len(order)),
                )
            )
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait()
    db = sqlite3.connect(dtmp / "audit.db")
    rows = db.execute(
        "SELECT key, n_inputs, alerts FROM requests WHERE path = '/v1/predict' ORDER BY id"
    ).fetchall()
    db.close()
    first: dict[str, dict[str, int]] = {}
    seen: dict[str, int] = {}
    flagged_replay = replay_total = 0
    for key, n, alerts in rows:
        before = seen.get(key, 0)
        seen[key] = before + n
        marks = {
            m.group(1): (int(m.group(2)), int(m.group(3)))
            for m in re.finditer(r"(\w+)@(\d+):(\d+)", alerts or "")
        }
        if key.startswith("replay"):
            replay_total += n
            flagged_replay += max((c for _, c in marks.values()), default=0)
        for kind, (idx, _) in marks.items():
            first.setdefault(key, {}).setdefault(kind, before + idx + 1)
    attacks = {}
    for name in sorted(k for k in keys if not k.startswith("replay")):
        f = first.get(name, {})
        attacks[name] = {
            "queries_sent": seen.get(name, 0),
            "first_flag": min(f.values()) if f else None,
            "first_blacklight": f.get("blacklight"),
            "first_prada": f.get("prada"),
            "attack_succeeded": success.get(name),
        }
    return {"attacks": attacks, "replay_queries": replay_total, "replay_flagged": flagged_replay,
            "false_alarm_rate": flagged_replay / max(replay_total, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bare-server", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per throughput phase")
    ap.add_argument("--latency-requests", type=int, default=300)
    ap.add_argument("--attacks", type=int, default=5, help="inputs attacked by each attack")
    ap.add_argument("--attack-budget", type=int, default=300, help="queries per attack run")
    ap.add_argument("--replay-keys", type=int, default=4)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    if args.bare_server:
        bare_server(args.bare_server)
        return
    with tempfile.TemporaryDirectory(prefix="mlw-gw-bench-") as d:
        tmp = Path(d)
        model, x, y = _train(tmp)
        print(
            f"load: {args.rounds} rounds, {args.latency_requests} sequential requests + {args.threads} threads x {args.duration:.0f} s each"
        )
        load = load_benchmark(
            tmp, model, x, args.rounds, args.threads, args.duration, args.latency_requests
        )
        print("attribution: in-process CPU per request")
        attr = attribution(model, x, args.latency_requests, args.rounds)
        print(
            f"detection: {args.attacks} inputs x (Square, HopSkipJump), {args.attack_budget} queries each; {args.replay_keys} replay keys"
        )
        det = detection_benchmark(
            tmp, model, x, y, args.attacks, args.replay_keys, args.attack_budget
        )
    b, g = load["bare"], load["gateway"]
    print("\n== load (medians over rounds; single-input requests on loopback)")
    print(f"{'':10s}{'p50 ms':>9s}{'p99 ms':>9s}{'req/s':>9s}{'CPU ms/req':>12s}")
    print(f"{'bare':10s}{b['p50']:9.2f}{b['p99']:9.2f}{b['rps']:9.0f}{b['cpu_ms']:12.2f}")
    print(f"{'gateway':10s}{g['p50']:9.2f}{g['p99']:9.2f}{g['rps']:9.0f}{g['cpu_ms']:12.2f}")
    print(
        f"server CPU overhead {load['cpu_overhead_ms']:.2f} ms per request (scheduler-independent)"
    )
    print(
        f"p50 overhead {load['p50_overhead_ms']:.2f} ms (target <= 2)   throughput ratio {load['throughput_ratio']:.2f} (target >= 0.80)"
    )
    print(
        f"non-200 responses {load['responses_not_200']}   5xx responses {load['responses_5xx']}   answered by gateway {load['gateway_answered']}   lost audit records after kill -9: {load['audit_lost']}"
    )
    print("\n== in-process CPU ms per request (client included; ASGI, no sockets)")
    for name, ms in attr.items():
        print(f"{name:14s}{ms:7.3f}   (+{ms - attr['bare']:.3f} vs bare)")
    print("\n== detection (queries until the key is first flagged; target <= 50)")
    for name, a in det["attacks"].items():
        print(
            f"{name:9s} sent {a['queries_sent']:4d}  first flag {a['first_flag']}  (blacklight {a['first_blacklight']}, prada {a['first_prada']})  attack succeeded: {a['attack_succeeded']}"
        )
    print(
        f"replayed held-out queries: {det['replay_queries']}, flagged {det['replay_flagged']} -> false-alarm rate {det['false_alarm_rate']:.4f} (target <= 0.01)"
    )
    if args.out:
        args.out.write_text(
            json.dumps({"load": load, "attribution": attr, "detection": det}, indent=2)
        )


if __name__ == "__main__":
    main()
