"""Gateway benchmark: overhead under bounded loopback load, connection floods, detection.

Part 1 (load). The same TorchScript SmallCNN (trained on digits) is served twice, each
in its own uvicorn process: behind ``mlwarden serve`` (auth, validation, limits,
Blacklight + similarity + PRADA monitoring, output hardening, audit commit before
every answer, metrics) and behind a bare FastAPI endpoint served the ordinary way
(``uvicorn.run(app, host, port)``: uvicorn binds the socket itself, so asyncio sets
TCP_NODELAY; parse JSON, run the model in the thread pool, return scores). The same
Python client sends single-input requests, each a distinct input (the gateway skips
detection on exact repeats; see :class:`Feed`): sequential requests on one kept-alive
connection (keep-alive latency), sequential requests each on a new connection
(new-connection latency), then ``C`` threads for ``--duration`` seconds for
throughput at concurrency C = 1, 8 and 32, the two servers back to back (a pair) in
alternating order. The throughput ratio is the median of the per-pair ratios (the
machine's load from other processes changes less within a pair than between rounds);
latencies are medians over rounds (overheads: medians of the per-round differences).
Each throughput run also reads the server process's CPU time from ``/proc``: CPU ms
per request per server and concurrency, and the CPU ratio bare/gateway (median over
pairs), the throughput ratio of a CPU-bound server whatever the scheduler did. At
the end the gateway is killed with SIGKILL and every answered request id is looked
up in its audit log (lost records must be 0); 5xx must be 0. Targets: keep-alive p50
overhead <= 2 ms, throughput >= 0.8x of bare at concurrency 8.

Part 1b (flood). A fresh gateway; a client process opens ``--flood`` connections from
several loopback addresses (half silent, half with a request head never finished) and
holds them; while they are held, /healthz is timed (target: within 1 s) and a keyed
prediction is sent; the bytes the gateway wrote to stderr are counted.

Part 1c (attribution). The bare app and the gateway (whole, without detectors,
without audit log, without both) are driven in-process through ASGI and the CPU time
per request is measured: scheduler-independent.

Part 2 (detection). A fresh gateway (action ``log``, so attacks run to the end). The
adaptive attack of the issue: random search (Linf 0.1 steps on 2x2 windows, a step is
kept when the true class's rounded score drops) with fresh Gaussian noise on every
query, 300 queries on each of 5 held-out digits, one key per run: with sigma 0.05,
with four benign queries mixed in per attack query, and with sigma 0.1 (beyond the
calibrated radius: an honest bound). Plus Square (Linf 0.1) and HopSkipJump (L2)
from ``mlwarden.evasion`` through :class:`~mlwarden.core.target.HttpTarget`. Benign
keys send 1,000 queries each: distinct digits, digits drawn with replacement, and
digits drawn with replacement plus Gaussian noise sigma 0.02. From the audit log:
queries until each attack key is first flagged (target <= 300 in 5/5 runs) and
flagged benign queries per 1,000 (target <= 1).

Part 3 (memory). Detector memory per key (``Monitor.nbytes``, and tracemalloc) after
10,000 distinct queries at the default histories, sent as the gateway does (requests of 8
through ``Monitor.submit``, the last leaving 7 queued), for every kind of key: 8x8
digits, 28x28 MNIST, 3x32x32 images, a 30-feature table with every table part on,
8,000-sample audio and 128-bit text.

Run (about 10 minutes on a loaded 2-core box)::

    timeout 1500 nice -n 10 .venv/bin/python benchmarks/gateway_load.py --rounds 3 --duration 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
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
def bare_app(target: Any) -> Any:
    """The baseline: a minimal FastAPI endpoint serving ``target`` (the same call the
    gateway makes, in the thread pool), with /healthz; served the ordinary way by
    :func:`bare_server`, driven in-process by the attribution runs."""
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    from mlwarden.core.target import probabilities

    app = FastAPI()
    model_cpu = [0.0]  # thread CPU seconds in the model, as the gateway's metrics count it

    def infer(x: np.ndarray) -> np.ndarray:
        t0 = time.thread_time()
        probs = probabilities(target, x)
        model_cpu[0] += time.thread_time() - t0
        return probs

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        x = np.asarray(body["inputs"], dtype=np.float32)
        probs = await run_in_threadpool(infer, x)
        return JSONResponse({"predictions": probs.tolist()})

    @app.get("/cpu")
    async def cpu() -> dict[str, float]:
        return {"model": model_cpu[0]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def bare_server(model_path: str, port: int) -> None:
    """:func:`bare_app` serving the model at ``model_path``, served the ordinary way."""
    import uvicorn

    from mlwarden.supplychain import load_target

    app = bare_app(load_target(model_path, access="score"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- helpers ----------------------------------------------------------------------------
_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _spawn(cmd: list[str], stderr: Any = subprocess.STDOUT) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=_ENV)
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


def _spawn_bare(model: Path) -> tuple[subprocess.Popen[str], str]:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cmd = [sys.executable, __file__, "--bare-server", str(model), "--bare-port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_ENV)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url  # type: ignore[return-value]
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("bare server did not start")


def _train(tmp: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
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
    path = tmp / "model.ts"
    torch.jit.save(torch.jit.trace(model, torch.from_numpy(ds.x[:1])), str(path))
    return path, ds.x[te], ds.y[te], ds.x.astype(np.float32)


def _distinct_inputs(x: np.ndarray) -> np.ndarray:
    """Every digit and its one-pixel shifts: distinct, natural-looking inputs."""
    shifts = [x] + [np.roll(x, s, axis=a) for a in (2, 3) for s in (-1, 1)]
    return np.concatenate(shifts).astype(np.float32)


THREADS: int | None = None  # --threads: the gateway's server.threads


def _write_config(
    path: Path, keys: dict[str, tuple[str, str]], action: str = "log", batch: int | None = None
) -> None:
    from mlwarden.serve.auth import hash_key

    lines = [
        *([f"server: {{threads: {THREADS}}}"] if THREADS else []),
        "input: {shape: [1, 8, 8], range: [0.0, 1.0], max_batch: 64}",
        "limits: {rate: 100000, burst: 100000, budget: 100000000}",
        f"detection: {{action: {action}" + ("}" if batch is None else f", batch: {batch}}}"),
        "audit: {path: audit.db}",
        "keys:",
    ]
    lines += [
        f"  {name}: {{hash: '{hash_key(k)}', role: {role}}}" for name, (k, role) in keys.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def _gateway(
    tmp: Path,
    model: Path,
    keys: dict[str, tuple[str, str]],
    stderr: Any = subprocess.STDOUT,
    batch: int | None = None,
) -> tuple[subprocess.Popen[str], str]:
    cfg = tmp / "gw.yaml"
    _write_config(cfg, keys, batch=batch)
    cmd = [
        sys.executable,
        "-m",
        "mlwarden",
        "serve",
        str(model),
        "--config",
        str(cfg),
        "--port",
        "0",
    ]
    return _spawn(cmd, stderr)


class Load:
    """Latencies, statuses and answered request ids of one load phase."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.ids: list[str] = []
        self.transport_errors = 0
        self.lock = threading.Lock()


def _client(
    url: str,
    key: str | None,
    feed: Feed,
    load: Load,
    stop: threading.Event,
    count: int | None,
    new_connection: bool = False,
) -> None:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if new_connection:
        headers["Connection"] = "close"  # the server closes; the next request reconnects
    sent = 0
    # TCP_NODELAY on the client: httpx writes headers and body separately; without it
    # Nagle plus the server's delayed ACK adds ~40 ms to every request on loopback.
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    with httpx.Client(headers=headers, timeout=30, transport=transport) as c:
        while not stop.is_set() and (count is None or sent < count):
            body = feed.next()
            t0 = time.perf_counter()
            try:
                r = c.post(f"{url}/v1/predict", content=body)
            except httpx.TransportError:  # counted, not timed: the connection broke
                sent += 1
                with load.lock:
                    load.transport_errors += 1
                continue
            dt = time.perf_counter() - t0
            sent += 1
            with load.lock:
                load.latencies.append(dt)
                load.statuses.append(r.status_code)
                if "X-Request-Id" in r.headers:
                    load.ids.append(r.headers["X-Request-Id"])


def _fill_histories(url: str, keys: list[str | None], xs: np.ndarray, per_key: int) -> None:
    """Each key first sends ``per_key`` distinct inputs of ``xs`` (64 a request), so the
    throughput runs measure detectors at a full history (10,000 queries by default)."""
    t0 = time.perf_counter()
    with httpx.Client(timeout=120) as c:
        for i, key in enumerate(keys):
            part = xs[i * per_key : (i + 1) * per_key]
            for s in range(0, len(part), 64):
                r = c.post(f"{url}/v1/predict", content=_bodies(part[s : s + 64], 64)[0],
                           headers={"Authorization": f"Bearer {key}"})  # fmt: skip
                if r.status_code != 200:
                    raise RuntimeError(f"history fill answered {r.status_code}: {r.text[:200]}")
    print(f"  histories filled: {per_key} distinct inputs x {len(keys)} keys "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip


def _bodies(xs: np.ndarray, per: int = 1) -> list[bytes]:
    if per > 1:
        return [json.dumps({"inputs": xs[i : i + per].tolist()}).encode()
                for i in range(0, len(xs), per)]  # fmt: skip
    return [json.dumps({"inputs": [x.tolist()]}).encode() for x in xs]


def _load_inputs(xs: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct inputs: ``xs``, then mixtures ``w a + (1 - w) b`` of two random ones."""
    rng = np.random.default_rng(SEED + 1)
    extra = max(0, n - len(xs))
    a, b = rng.integers(0, len(xs), (2, extra))
    w = rng.uniform(0.3, 0.7, (extra, *([1] * (xs.ndim - 1)))).astype(np.float32)
    return np.concatenate([xs, w * xs[a] + (1 - w) * xs[b]])[:n].astype(np.float32)


def _inputs_needed(rounds: int, seconds: float, n_latency: int, rps: float = 3000.0) -> int:
    """Distinct inputs the gateway's side of the load part can use: ``rps`` (above what
    2 cores answer) for every throughput run, plus the latency rounds and the warm-up."""
    runs = rounds * len(CONCURRENCY) * seconds * rps
    return max(60000, int(runs) + rounds * (n_latency + max(n_latency // 3, 20)) + 50)


class Feed:
    """Request bodies handed out once each, to every client thread of every phase.

    The gateway drops an exact repeat of one of a key's last 10,000 inputs before its
    detectors (a retry is not probing), so a load that cycles through a small set of
    inputs measures a gateway that skips most detection. Every request takes the next
    body instead; ``wrapped`` says whether the run needed more than there were.
    """

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = bodies
        self._count = itertools.count()  # next() is atomic under the GIL
        self.used = 0

    def next(self) -> bytes:
        i = next(self._count)
        self.used = max(self.used, i + 1)
        return self.bodies[i % len(self.bodies)]

    @property
    def wrapped(self) -> bool:
        return self.used > len(self.bodies)


def _latency(url: str, key: str | None, feed: Feed, n: int, new: bool = False) -> Load:
    load = Load()
    _client(url, key, feed, load, threading.Event(), n, new)
    return load


def _throughput(url: str, keys: list[str | None], feed: Feed, seconds: float) -> tuple[float, Load]:
    load, stop = Load(), threading.Event()
    threads = [
        threading.Thread(target=_client, args=(url, k, feed, load, stop, None)) for k in keys
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


def _stage_cpu(url: str, key: str | None) -> dict[str, float]:
    """CPU seconds by stage: the gateway's ``mlwarden_cpu_seconds_total`` (model,
    detectors; ``key`` may read metrics), the bare server's model (``key`` None)."""
    if key is None:
        return dict(httpx.get(f"{url}/cpu").json())
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}).text
    out = {}
    for line in text.splitlines():
        if line.startswith('mlwarden_cpu_seconds_total{stage="') and "process" not in line:
            out[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("mlwarden_requests_fast_path_total "):  # a count, not seconds
            out["fast_path"] = float(line.rsplit(" ", 1)[1])
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000.0, q))


# -- part 1 -----------------------------------------------------------------------------
CONCURRENCY = (1, 8, 32)


def _latency_round(
    url: str, key: str | None, feed: Feed, n_latency: int
) -> tuple[dict[str, float], list[Load]]:
    ka = _latency(url, key, feed, n_latency)
    new = _latency(url, key, feed, max(n_latency // 3, 20), new=True)
    out = {
        "keepalive_p50": _pct(ka.latencies, 50),
        "keepalive_p99": _pct(ka.latencies, 99),
        "newconn_p50": _pct(new.latencies, 50),
        "newconn_p99": _pct(new.latencies, 99),
    }
    return out, [ka, new]


def load_benchmark(
    tmp: Path,
    model: Path,
    xs: np.ndarray,
    rounds: int,
    seconds: float,
    n_latency: int,
    n_inputs: int = 60000,
    warm: int = 0,
) -> dict[str, Any]:
    """Latency per server, then throughput in *pairs*: bare and gateway back to back.

    On a shared machine the load of other processes changes from second to second, so
    each throughput figure is a pair of short runs, one per server, in alternating
    order; the ratio is the median of the per-pair ratios (``rounds`` pairs per
    concurrency), which cancels load that changes slower than a pair. Each run also
    reads the server process's CPU time (``/proc``) per answered request; the CPU ratio
    (bare over gateway, median over pairs) is the throughput ratio a CPU-bound server
    reaches, whatever share of the cores the scheduler gave each run. Latency overheads
    are medians of the per-round differences.
    """
    from mlwarden.serve.auth import new_key

    keys = {f"load{i}": (new_key(), "scores") for i in range(max(CONCURRENCY))}
    ops = new_key()  # reads /metrics: the gateway's CPU split by stage
    gw_proc, gw_url = _gateway(tmp, model, {**keys, "ops": (ops, "admin")})
    bare_proc, bare_url = _spawn_bare(model)
    key_list: list[str | None] = [k for k, _ in keys.values()]
    inputs = _load_inputs(xs, n_inputs + warm * len(keys))
    bodies = _bodies(inputs[warm * len(keys) :])
    # One feed per server: the gateway's inputs must all be distinct (it skips detection
    # on a repeat); the bare endpoint has nothing to skip, so it may cycle through the
    # same bodies, and a shared feed would spend half the distinct inputs on it.
    feeds = {"bare": Feed(bodies), "gateway": Feed(bodies)}
    feed = feeds["gateway"]
    if warm:
        _fill_histories(gw_url, key_list, inputs[: warm * len(keys)], warm)
    res: dict[str, dict[str, list[float]]] = {"bare": {}, "gateway": {}}
    pair_ratios: dict[str, list[float]] = {f"c{c}": [] for c in CONCURRENCY}
    # bare CPU/request over gateway CPU/request, per pair: the throughput ratio a
    # CPU-bound server would reach, independent of how the scheduler shared the cores
    cpu_ratios: dict[str, list[float]] = {f"c{c}": [] for c in CONCURRENCY}
    latency_diffs: dict[str, list[float]] = {"keepalive_p50": [], "newconn_p50": []}
    pids = {"bare": bare_proc.pid, "gateway": gw_proc.pid}
    urls = {"bare": bare_url, "gateway": gw_url}
    answered: list[str] = []
    statuses: list[int] = []
    errors = {"bare": 0, "gateway": 0}

    def account(name: str, loads: list[Load]) -> None:
        for ld in loads:
            statuses.extend(ld.statuses)
            errors[name] += ld.transport_errors
            if name == "gateway":
                answered.extend(ld.ids)

    try:
        for name, k in (("bare", None), ("gateway", key_list[0])):
            _latency(urls[name], k, feeds[name], 50)  # warm-up
        for r in range(rounds):
            names = ["bare", "gateway"] if r % 2 == 0 else ["gateway", "bare"]
            for name in names:
                got, loads = _latency_round(
                    urls[name], key_list[0] if name == "gateway" else None, feeds[name], n_latency
                )
                account(name, loads)
                for m, v in got.items():
                    res[name].setdefault(m, []).append(v)
                print(
                    f"  round {r + 1} {name:8s} "
                    + "  ".join(f"{m} {v:.2f}" for m, v in got.items())
                )
            for m, diffs in latency_diffs.items():
                diffs.append(res["gateway"][m][-1] - res["bare"][m][-1])
            for c in CONCURRENCY:
                rps: dict[str, float] = {}
                cpu_ms: dict[str, float] = {}
                for name in names:
                    ks = key_list[:c] if name == "gateway" else [None] * c
                    stage0 = _stage_cpu(urls[name], ops if name == "gateway" else None)
                    cpu0 = _cpu_seconds(pids[name])
                    rps[name], thr = _throughput(urls[name], ks, feeds[name], seconds)
                    n_answered = max(len(thr.latencies), 1)
                    cpu_ms[name] = (_cpu_seconds(pids[name]) - cpu0) * 1e3 / n_answered
                    stage1 = _stage_cpu(urls[name], ops if name == "gateway" else None)
                    if "fast_path" in stage1:  # share of requests read without h11
                        fast = stage1.pop("fast_path") - stage0.pop("fast_path", 0.0)
                        res[name].setdefault(f"fast_share_c{c}", []).append(fast / n_answered)
                    for stage, sec in stage1.items():  # where the CPU went, ms a request
                        ms = (sec - stage0.get(stage, 0.0)) * 1e3 / n_answered
                        res[name].setdefault(f"{stage}_ms_c{c}", []).append(ms)
                    account(name, [thr])
                    res[name].setdefault(f"rps_c{c}", []).append(rps[name])
                    res[name].setdefault(f"cpu_ms_c{c}", []).append(cpu_ms[name])
                pair_ratios[f"c{c}"].append(rps["gateway"] / rps["bare"])
                cpu_ratios[f"c{c}"].append(cpu_ms["bare"] / cpu_ms["gateway"])
                print(f"  round {r + 1} c{c:<3d} bare {rps['bare']:.0f} rps {cpu_ms['bare']:.3f} "
                      f"ms CPU  gateway {rps['gateway']:.0f} rps {cpu_ms['gateway']:.3f} ms CPU  "
                      f"ratio {rps['gateway'] / rps['bare']:.2f} (CPU {cpu_ratios[f'c{c}'][-1]:.2f}; "
                      f"model bare {res['bare'][f'model_ms_c{c}'][-1]:.3f} gateway "
                      f"{res['gateway'][f'model_ms_c{c}'][-1]:.3f}, detectors "
                      f"{res['gateway'].get(f'detectors_ms_c{c}', [0.0])[-1]:.3f} ms)",
                      flush=True)  # fmt: skip
    finally:
        os.kill(gw_proc.pid, signal.SIGKILL)  # no graceful flush: records must already be durable
        gw_proc.wait()
        bare_proc.terminate()
        bare_proc.wait()
    db = sqlite3.connect(tmp / "audit.db")
    stored = {row[0] for row in db.execute("SELECT request_id FROM requests")}
    db.close()
    med = {s: {m: statistics.median(v) for m, v in d.items()} for s, d in res.items()}
    for name in med:  # server CPU per request: the median over every throughput run
        med[name]["cpu_ms"] = statistics.median(
            v for c in CONCURRENCY for v in res[name][f"cpu_ms_c{c}"]
        )
    b, g = med["bare"], med["gateway"]
    return {
        "bare": b,
        "gateway": g,
        # medians of the per-round differences (each round's two runs back to back)
        "keepalive_p50_overhead_ms": statistics.median(latency_diffs["keepalive_p50"]),
        "newconn_p50_overhead_ms": statistics.median(latency_diffs["newconn_p50"]),
        "latency_round_overheads_ms": latency_diffs,
        "cpu_overhead_ms": g["cpu_ms"] - b["cpu_ms"],
        "throughput_ratio": {k: statistics.median(v) for k, v in pair_ratios.items()},
        "throughput_pair_ratios": pair_ratios,
        "cpu_ratio": {k: statistics.median(v) for k, v in cpu_ratios.items()},
        "cpu_pair_ratios": cpu_ratios,
        "inputs_sent": feed.used,
        "inputs_distinct": len(feed.bodies),
        "inputs_repeated": feed.wrapped,
        "responses_5xx": sum(s >= 500 for s in statuses),
        "responses_not_200": sum(s != 200 for s in statuses),
        "transport_errors": errors,
        "gateway_answered": len(answered),
        "audit_lost": len(set(answered) - stored),
        "rounds": res,
    }


# -- part 1b: idle-connection flood ------------------------------------------------------
def flood_benchmark(tmp: Path, model: Path, xs: np.ndarray, n: int) -> dict[str, Any]:
    """Hold ``n`` idle and half-open connections; time /healthz and a prediction meanwhile."""
    import resource

    from mlwarden.serve.auth import new_key

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 1024)), hard))
    ftmp = tmp / "flood"
    ftmp.mkdir()
    keys = {"user": (new_key(), "scores"), "ops": (new_key(), "admin")}
    err_path = ftmp / "stderr.txt"
    with err_path.open("w") as err:
        proc, url = _gateway(ftmp, model, keys, stderr=err)
    host, port = url.removeprefix("http://").split(":")
    head = b"POST /v1/predict HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n"
    held: list[socket.socket] = []
    out: dict[str, Any] = {"connections": n}
    try:
        t0 = time.monotonic()
        for i in range(n):
            s = socket.socket()
            s.bind((f"127.0.0.{1 + i % 5}", 0))
            s.connect((host, int(port)))
            if i % 2:
                s.sendall(head)
            held.append(s)
        out["open_seconds"] = time.monotonic() - t0
        time.sleep(1.0)
        waits = []
        for _ in range(5):
            t1 = time.perf_counter()
            ok = httpx.get(f"{url}/healthz", timeout=10).status_code == 200
            waits.append((time.perf_counter() - t1) if ok else float("inf"))
        out["healthz_ms"] = [w * 1000 for w in waits]
        t1 = time.perf_counter()
        r = httpx.post(f"{url}/v1/predict", content=_bodies(xs[:1])[0],
                       headers={"Authorization": f"Bearer {keys['user'][0]}"}, timeout=10)  # fmt: skip
        out["predict_status"], out["predict_ms"] = r.status_code, (time.perf_counter() - t1) * 1000
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {keys['ops'][0]}"})
        out["connection_metrics"] = [
            ln for ln in metrics.text.splitlines() if ln.startswith("mlwarden_connections")
        ]
        time.sleep(6.0)  # past the 5 s header deadline: the held connections are dropped
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {keys['ops'][0]}"})
        out["connection_metrics_after_6s"] = [
            ln for ln in metrics.text.splitlines() if ln.startswith("mlwarden_connections")
        ]
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait()
    out["stderr_bytes"] = err_path.stat().st_size
    return out


# -- part 1b: in-process attribution ----------------------------------------------------
def attribution(model: Path, xs: np.ndarray, n: int, rounds: int) -> dict[str, float]:
    """CPU ms per request through each app in-process (ASGI, no sockets, no scheduler noise).

    The gateway is measured whole and with its detectors and/or audit log switched off,
    so the difference to the bare app is split between its parts.
    """
    import asyncio
    import time as _time

    import torch

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
            "detection": {"blacklight": {"enabled": detect}, "prada": {"enabled": detect},
                          "similarity": {"enabled": detect}},
        })  # fmt: skip
        return create_app(target, cfg)

    bare = bare_app(target)

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
class _Stream:
    """One key's requests: request id -> (is attack query, attack query number)."""

    def __init__(self, url: str, key: str) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self.sent: dict[str, tuple[bool, int]] = {}
        self.attack_queries = 0
        # attack query numbers answered wrong: any, and within Linf 0.1 of the original
        self.wrong: tuple[list[int], list[int]] = ([], [])

    def ask(self, x: np.ndarray, attack: bool) -> np.ndarray:
        r = self.client.post("/v1/predict", json={"inputs": [x.tolist()]})
        r.raise_for_status()
        if attack:
            self.attack_queries += 1
        self.sent[r.headers["X-Request-Id"]] = (attack, self.attack_queries)
        return np.asarray(r.json()["predictions"][0])


def noisy_random_search(
    stream: _Stream,
    x0: np.ndarray,
    y0: int,
    *,
    queries: int,
    sigma: float,
    benign: np.ndarray | None,
    seed: int,
) -> bool:
    """Random search on the rounded score of the true class, fresh N(0, sigma) per query.

    Each step sets a random 2x2 window of the perturbation to +-0.1 (Linf 0.1) and keeps
    it when the true class's score drops (Square's search, Andriushchenko et al. 2020,
    arXiv:1912.00049, with the per-query noise of the adaptive attacks against stateful
    defences). With ``benign``, four of those queries are sent before each attack query.
    Returns whether any query was misclassified.
    """
    rng = np.random.default_rng(seed)
    delta, best, fooled, b = np.zeros_like(x0), np.inf, False, 0
    for _ in range(queries):
        if benign is not None:
            for _ in range(4):
                stream.ask(benign[b % len(benign)], attack=False)
                b += 1
        cand = delta.copy()
        r, c = rng.integers(0, 7, 2)
        cand[..., r : r + 2, c : c + 2] = rng.choice([-0.1, 0.1])
        q = np.clip(x0 + cand + rng.normal(0, sigma, x0.shape), 0, 1).astype(np.float32)
        scores = stream.ask(q, attack=True)
        if int(scores.argmax()) != y0:
            fooled = True
            stream.wrong[0].append(stream.attack_queries)
            if float(np.abs(q - x0).max()) <= 0.1 + 1e-6:
                stream.wrong[1].append(stream.attack_queries)
        if scores[y0] < best:
            best, delta = scores[y0], cand
    return fooled


def _watch(target: Any, x0: np.ndarray, y0: int) -> tuple[list[int], list[int]]:
    """The request numbers of ``target`` (an ``HttpTarget``) answered wrong on some row:
    any, and on a row within Linf 0.1 of ``x0`` (the attack's adversarial answer in hand)."""
    wrong: tuple[list[int], list[int]] = ([], [])
    inner, calls = target._predict, [0]

    def predict(x: np.ndarray) -> np.ndarray:
        out = inner(x)
        calls[0] += 1
        labels = np.asarray(out if np.ndim(out) == 1 else np.argmax(out, axis=1))
        bad = labels.astype(np.int64) != y0
        linf = np.abs(np.reshape(x, (len(x), -1)) - x0.reshape(1, -1)).max(axis=1)
        if bad.any():
            wrong[0].append(calls[0])
        if (bad & (linf <= 0.1 + 1e-6)).any():
            wrong[1].append(calls[0])
        return out

    target._predict = predict
    return wrong


def _flag_rows(rows: list[tuple[str, str]], st: _Stream | None) -> list[tuple[int, str]]:
    """(attack query number (request for Square / HopSkipJump), alerts) of each of a
    key's flagged rows: the first flag and every later one (gateway_corroboration.py)."""
    return [(st.sent[rid][1] if st is not None else n, alerts)
            for n, (rid, alerts) in enumerate(rows, 1) if alerts]  # fmt: skip


def _flags(db_path: Path) -> dict[str, list[tuple[str, str]]]:
    """key -> [(request id, alerts)] in order, from the audit log."""
    db = sqlite3.connect(db_path)
    rows = db.execute(
        "SELECT key, request_id, alerts FROM requests WHERE path = '/v1/predict' ORDER BY id"
    ).fetchall()
    db.close()
    out: dict[str, list[tuple[str, str]]] = {}
    for key, rid, alerts in rows:
        out.setdefault(key, []).append((rid, alerts or ""))
    return out


def detection_benchmark(
    tmp: Path,
    model: Path,
    x: np.ndarray,
    y: np.ndarray,
    pool: np.ndarray,
    n_attacks: int,
    budget: int,
    n_benign: int,
) -> dict[str, Any]:
    from mlwarden.core.errors import UserError
    from mlwarden.core.target import HttpTarget
    from mlwarden.evasion.attacks import HopSkipJump, Square
    from mlwarden.serve.auth import new_key

    variants = {"rs_noise05": (0.05, False), "rs_noise05_mixed": (0.05, True),
                "rs_noise10": (0.10, False)}  # fmt: skip
    names = [f"{v}_{i}" for v in variants for i in range(n_attacks)]
    names += [f"{a}_{i}" for a in ("square", "hsj") for i in range(n_attacks)]
    benign_kinds = ("benign_distinct", "benign_replacement", "benign_noise02")
    keys = {n: (new_key(), "labels" if n.startswith("hsj") else "scores") for n in names}
    keys.update({n: (new_key(), "scores") for n in benign_kinds})
    dtmp = tmp / "detect"
    dtmp.mkdir()
    # batch 1: each alert on the row of the request that sent the flagged query (the
    # default batch of 8 raises the same alerts, up to 7 queries of the key later)
    proc, url = _gateway(dtmp, model, keys, batch=1)
    streams: dict[str, _Stream] = {}
    success: dict[str, bool] = {}
    wrong: dict[str, tuple[list[int], list[int]]] = {}
    rng = np.random.default_rng(SEED)
    try:
        mix_pool = pool[rng.permutation(len(pool))]
        for v, (sigma, mixed) in variants.items():
            for i in range(n_attacks):
                st = streams[f"{v}_{i}"] = _Stream(url, keys[f"{v}_{i}"][0])
                success[f"{v}_{i}"] = noisy_random_search(
                    st, x[i], int(y[i]), queries=budget, sigma=sigma,
                    benign=np.roll(mix_pool, -i * 4 * budget, axis=0) if mixed else None, seed=i)  # fmt: skip
        for i in range(n_attacks):
            xi, yi = x[i : i + 1], y[i : i + 1]
            for name, attack, access in (
                (f"square_{i}", Square(norm="linf", eps=0.1, n_queries=budget, seed=i), "score"),
                (f"hsj_{i}", HopSkipJump(norm="l2", max_queries=budget, seed=i), "label"),
            ):
                target = HttpTarget(f"{url}/v1/predict", headers={"Authorization": f"Bearer {keys[name][0]}"},
                                    access=access, output="probabilities" if access == "score" else "labels")  # fmt: skip
                wrong[name] = _watch(target, xi[0], int(yi[0]))
                try:
                    adv = attack.generate(target, xi, yi)
                    success[name] = bool(target.predict_labels(adv)[0] != yi[0])
                except UserError as exc:
                    print(f"  {name}: stopped ({exc})")
                    success[name] = False
                target.close()
        benign_streams = {
            "benign_distinct": pool[rng.permutation(len(pool))[:n_benign]],
            "benign_replacement": pool[rng.integers(0, len(pool), n_benign)],
            "benign_noise02": np.clip(pool[rng.integers(0, len(pool), n_benign)]
                                      + rng.normal(0, 0.02, (n_benign, *pool.shape[1:])), 0, 1),
        }  # fmt: skip
        for name, xs in benign_streams.items():
            st = streams[name] = _Stream(url, keys[name][0])
            for q in xs:
                st.ask(q.astype(np.float32), attack=True)
    finally:
        proc.terminate()
        proc.wait()
    flags = _flags(dtmp / "audit.db")
    attacks: dict[str, Any] = {}
    for name in names:
        rows = flags.get(name, [])
        st = streams.get(name)
        first, kinds = None, ""
        for n_query, (rid, alerts) in enumerate(rows, 1):
            if alerts:
                # attack queries sent so far (mixed runs also send benign ones)
                first = st.sent[rid][1] if st is not None else n_query
                kinds = alerts
                break
        sent = st.attack_queries if st is not None else len(rows)
        bad = st.wrong if st is not None else wrong.get(name, ([], []))
        attacks[name] = {"queries_sent": sent, "first_flag": first, "alerts": kinds,
                         "attack_succeeded": success.get(name), "flags": _flag_rows(rows, st),
                         "wrong": bad[0][:1], "wrong_near": bad[1][:1]}  # fmt: skip
    benign = {}
    for name in benign_kinds:
        rows = flags.get(name, [])
        benign[name] = {"queries": len(rows), "flagged": sum(1 for _, a in rows if a)}
    return {"attacks": attacks, "benign": benign}


# -- part 3: memory ------------------------------------------------------------------------
#: every kind of key: (input shape, modality); ``table`` runs with every table part on
MEMORY_KINDS = {
    "digits 1x8x8": ([1, 8, 8], "tensor"),
    "MNIST 1x28x28": ([1, 28, 28], "tensor"),
    "image 3x32x32": ([3, 32, 32], "tensor"),
    "table 30": ([30], "tensor"),
    "audio 8000": ([8000], "audio"),
    "text 128": ([128], "text"),
}


def _table_detection() -> tuple[Any, np.ndarray]:
    """Breast cancer rows (min-max scaled) and a table config with every per-key part on,
    as ``gateway calibrate`` leaves it: manifold axes, a projection, the residual
    history off it, the dilution test and the answers."""
    from sklearn.datasets import load_breast_cancer

    from mlwarden.serve.config import Detection
    from mlwarden.serve.manifold import fit

    x = load_breast_cancer().data.astype(np.float32)
    x = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
    found = fit(x, 0.01)
    assert found is not None
    comps = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)[2][:8]
    det = Detection.model_validate({
        "manifold": {"axes": found[0].tolist(), "scales": found[1].tolist()},
        "similarity": {"projection": {"mean": x.mean(axis=0).tolist(), "components": comps.tolist()}},
        "dilution": {"enabled": True, "residual": 0.05}, "answers": {"spread": 1.0}})  # fmt: skip
    return det, x


def _memory_stream(name: str, pool: np.ndarray, n: int, rng: np.random.Generator) -> Any:
    """``n`` distinct queries of kind ``name`` in requests of 8, then 7 (the queue full)."""
    shape, _ = MEMORY_KINDS[name]
    digits = _distinct_inputs(pool) if name == "digits 1x8x8" else pool
    table = _table_detection()[1] if name == "table 30" else None
    for start in [*range(0, n - 7, 8), n - 7]:
        size = 8 if start < n - 7 else 7
        if name == "digits 1x8x8":
            xb = digits[np.arange(start, start + size) % len(digits)]
            xb = np.clip(xb + rng.normal(0, 0.01, xb.shape), 0, 1)
        elif table is not None:
            xb = np.clip(table[rng.integers(0, len(table), size)] + rng.normal(0, 0.01, (size, 30)),
                         0, 1)  # fmt: skip
        elif name == "text 128":  # MinHash bits at one scale, as text_features gives them
            xb = (rng.random((size, 128)) < 0.5) * 0.3
        elif name == "audio 8000":
            xb = rng.normal(0, 0.1, (size, *shape))
        else:
            xb = rng.uniform(0, 1, (size, *shape))
        yield xb.astype(np.float32)


def memory_benchmark(pool: np.ndarray, n: int) -> dict[str, dict[str, float]]:
    """Detector memory per key after ``n`` distinct queries at the default histories, MB,
    every kind of key, through ``Monitor.submit`` as the gateway sends them."""
    import tracemalloc

    from mlwarden.serve.config import Detection
    from mlwarden.serve.monitor import Monitor, compile_kernels

    compile_kernels()  # before tracing: numba's compiler is no key's state
    rng = np.random.default_rng(SEED)
    out = {}
    for name, (shape, modality) in MEMORY_KINDS.items():
        det = _table_detection()[0] if name == "table 30" else Detection()
        mon = Monitor(det, shape=list(shape), modality=modality)
        mon.crosskey = None  # gateway-wide, not the key's (CrossKey.nbytes: 1.65 MB)
        # another key's requests first: what the monitor builds once for every key
        # (sketch projections, caches) is not this key's
        for xb in itertools.islice(_memory_stream(name, pool, 64, rng), 8):
            mon.submit("warm", xb, np.zeros(len(xb), np.int64))
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.process_time()
        for xb in _memory_stream(name, pool, n, rng):
            probs = rng.dirichlet(np.ones(10), len(xb)).astype(np.float32)
            mon.submit("k", xb, probs.argmax(axis=1), probs)
        cpu = (time.process_time() - t0) * 1000 / n
        traced = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out[name] = {"nbytes_mb": mon.nbytes("k") / 1e6, "traced_mb": traced / 1e6,
                     "cpu_ms_per_query_traced": cpu}  # fmt: skip
        print(f"  {name}: {json.dumps(out[name])}", flush=True)
    return out


def _report_load(load: dict[str, Any]) -> None:
    b, g = load["bare"], load["gateway"]
    print("\n== load (medians over rounds; single-input requests on loopback)")
    cols = ["keepalive_p50", "keepalive_p99", "newconn_p50", "newconn_p99",
            *[f"rps_c{c}" for c in CONCURRENCY], *[f"cpu_ms_c{c}" for c in CONCURRENCY]]  # fmt: skip
    print(f"{'':9s}" + "".join(f"{c:>14s}" for c in cols))
    for name, d in (("bare", b), ("gateway", g)):
        print(f"{name:9s}" + "".join(f"{d[c]:14.3f}" for c in cols))
    ratios = "  ".join(f"{k} {v:.2f}x" for k, v in load["throughput_ratio"].items())
    cpu = "  ".join(
        f"{k} {v:.2f}x (quartiles {_quartiles(load['cpu_pair_ratios'][k])})"
        for k, v in load["cpu_ratio"].items()
    )
    print(f"keep-alive p50 overhead {load['keepalive_p50_overhead_ms']:.2f} ms (target <= 2); "
          f"new-connection p50 overhead {load['newconn_p50_overhead_ms']:.2f} ms")  # fmt: skip
    print(f"throughput gateway/bare: {ratios} (target >= 0.80 at c8)")
    print(f"CPU per request bare/gateway: {cpu}")
    print(f"server CPU overhead {load['cpu_overhead_ms']:.3f} ms per request")
    for c in CONCURRENCY:
        if f"model_ms_c{c}" in g and f"model_ms_c{c}" in b:
            det = g.get(f"detectors_ms_c{c}", 0.0)
            rest = g[f"cpu_ms_c{c}"] - g[f"model_ms_c{c}"] - det
            print(f"CPU ms per request at c{c} (medians): model bare {b[f'model_ms_c{c}']:.3f} "
                  f"gateway {g[f'model_ms_c{c}']:.3f}; detectors {det:.3f}; the rest (HTTP, "
                  f"checks, audit) bare {b[f'cpu_ms_c{c}'] - b[f'model_ms_c{c}']:.3f} gateway "
                  f"{rest:.3f}")  # fmt: skip
        if f"fast_share_c{c}" in g:
            print(f"gateway requests read without h11 (serve/conn.py's fast path) at c{c}: "
                  f"{g[f'fast_share_c{c}']:.1%}")  # fmt: skip
    print(f"inputs: {load['inputs_sent']} sent of {load['inputs_distinct']} distinct"
          + ("  (REPEATED: raise --load-inputs)" if load["inputs_repeated"] else ""))  # fmt: skip
    print(f"5xx {load['responses_5xx']}  non-200 {load['responses_not_200']}  answered by gateway "
          f"{load['gateway_answered']}  lost audit records after kill -9: {load['audit_lost']}")  # fmt: skip


def _quartiles(values: list[float]) -> str:
    q1, q3 = np.percentile(values, [25, 75])
    return f"{q1:.2f}-{q3:.2f} of {len(values)} pairs"


def _report(results: dict[str, Any]) -> None:
    if "load" in results:
        _report_load(results["load"])
    if "flood" in results:
        _report_flood(results["flood"])
    if "attribution" in results:
        attr = results["attribution"]
        print("\n== in-process CPU ms per request (client included; ASGI, no sockets)")
        for name, ms in attr.items():
            print(f"{name:14s}{ms:7.3f}   (+{ms - attr['bare']:.3f} vs bare)")
    if "detection" in results:
        _report_detection(results["detection"])
    if "memory" in results:
        print("\n== detector memory per key at the default histories")
        for name, m in results["memory"].items():
            print(f"{name:14s} nbytes {m['nbytes_mb']:.2f} MB  tracemalloc {m['traced_mb']:.2f} MB")


def _report_flood(flood: dict[str, Any]) -> None:
    print(f"\n== flood: {flood['connections']} idle/half-open connections held "
          f"(opened in {flood['open_seconds']:.1f} s)")  # fmt: skip
    print(f"/healthz ms while held: {[round(w, 1) for w in flood['healthz_ms']]} (target < 1000)")
    print(f"keyed prediction: {flood['predict_status']} in {flood['predict_ms']:.1f} ms; "
          f"gateway stderr {flood['stderr_bytes']} bytes")  # fmt: skip
    for line in flood["connection_metrics"] + ["after 6 s:"] + flood["connection_metrics_after_6s"]:
        print("  " + line)


def _report_detection(det: dict[str, Any]) -> None:
    print("\n== detection (attack queries until the key is first flagged; target <= 300 in 5/5)")
    for name, a in det["attacks"].items():
        print(f"{name:20s} sent {a['queries_sent']:4d}  first flag {a['first_flag']}  "
              f"[{a['alerts']}]  attack succeeded: {a['attack_succeeded']}")  # fmt: skip
    for name, bn in det["benign"].items():
        rate = 1000 * bn["flagged"] / max(bn["queries"], 1)
        print(
            f"{name:20s} {bn['queries']} queries, {bn['flagged']} flagged -> {rate:.2f} per 1,000"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bare-server", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--bare-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per throughput phase")
    ap.add_argument("--latency-requests", type=int, default=300)
    ap.add_argument(
        "--load-inputs",
        type=int,
        help="distinct inputs for the gateway in the load part (each request sends the next "
        "one; default: enough for 3,000 requests/s in every throughput run, at least 60,000)",
    )
    ap.add_argument(
        "--warm-history",
        type=int,
        default=0,
        help="distinct inputs each key sends before the load part (10000: full detector "
        "histories at the defaults)",
    )
    ap.add_argument(
        "--concurrency",
        default="1,8,32",
        help="comma-separated client concurrencies of the throughput pairs (e.g. 8 alone, "
        "with more --rounds, for a tighter ratio at the target's concurrency)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        help="the gateway's server.threads (threads for models and detectors; default cores + 4)",
    )
    ap.add_argument("--flood", type=int, default=5000, help="idle connections held")
    ap.add_argument("--attacks", type=int, default=5, help="inputs attacked by each attack")
    ap.add_argument("--attack-budget", type=int, default=300, help="queries per attack run")
    ap.add_argument("--benign", type=int, default=1000, help="queries per benign stream")
    ap.add_argument("--memory-queries", type=int, default=10000)
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: load,flood,attribution,detection,memory",
    )
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    if args.bare_server:
        bare_server(args.bare_server, args.bare_port)
        return
    skip = set(args.skip.split(","))
    global CONCURRENCY, THREADS
    CONCURRENCY = tuple(int(c) for c in args.concurrency.split(","))
    if args.load_inputs is None:
        args.load_inputs = _inputs_needed(args.rounds, args.duration, args.latency_requests)
    THREADS = args.threads
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlw-gw-bench-") as d:
        tmp = Path(d)
        model, x, y, pool = _train(tmp)
        xs = _distinct_inputs(pool)[np.random.default_rng(SEED).permutation(5 * len(pool))]

        def done(part: str, value: Any) -> None:
            results[part] = value
            print(f"{part}: " + json.dumps(value, default=str), flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2, default=str))

        if "load" not in skip:
            print(
                f"load: {args.rounds} rounds, concurrency {CONCURRENCY}, {args.duration:.0f} s each"
            )
            done(
                "load",
                load_benchmark(
                    tmp,
                    model,
                    xs,
                    args.rounds,
                    args.duration,
                    args.latency_requests,
                    args.load_inputs,
                    args.warm_history,
                ),  # fmt: skip
            )
        if "flood" not in skip:
            print(f"flood: {args.flood} idle connections")
            done("flood", flood_benchmark(tmp, model, xs, args.flood))
        if "attribution" not in skip:
            print("attribution: in-process CPU per request")
            done("attribution", attribution(model, xs, args.latency_requests, args.rounds))
        if "detection" not in skip:
            print(f"detection: {args.attacks} inputs per attack, {args.attack_budget} queries each")
            done(
                "detection",
                detection_benchmark(
                    tmp, model, x, y, pool, args.attacks, args.attack_budget, args.benign
                ),
            )
        if "memory" not in skip:
            print(f"memory: {args.memory_queries} distinct queries per key")
            done("memory", memory_benchmark(pool, args.memory_queries))
    _report(results)


if __name__ == "__main__":
    main()
