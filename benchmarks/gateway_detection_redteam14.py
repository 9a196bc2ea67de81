"""Gateway stream detectors against an outside attacker: HTTP only, a model and data nobody tuned on.

Session 14's red team (issue 19 is judged on attackers other people build). Nothing here
comes from the other detection benchmarks: no ``Gate``, no in-process ``Monitor``, no
shared kinds. The gateway is the real ``mlwarden serve`` process on loopback, configured
as its docs say (``input:`` shape and range, keys, ``action: log``, the default detection
batch) and, unless ``--defaults``, tuned by ``mlwarden gateway calibrate`` on the
deployer's own plain sample. The attacker's client is its own (``http.client``, one
kept-alive connection a key, the ``scores`` role: rounded class probabilities).

Cases (models and data the detection rules were never fitted to):

Attack inputs: held-out inputs the model gets right with probability 0.8 or more.

* ``patches``: 3x16x16 RGB patches of scikit-learn's two sample photographs
  (``china.jpg``, ``flower.jpg``), four classes (which photo, top or bottom half), a
  small torch CNN of its own (two 3x3 convolutions, global average pooling) served as
  TorchScript. Calibration sample: 1,000 random patches; benign pool: patches of the
  photos mirrored left-right (a pool the calibration never saw);
* ``diabetes``: scikit-learn's diabetes table (442 patients, 10 features, min-max to
  [0, 1]), disease progression above the median or not, a scikit-learn MLP (one hidden
  layer of 32) served as a joblib pipeline. Calibration sample: the 221 training rows;
  benign pool: the other held-out rows, read again by a sensor logger's noise and rounding
  once they are used up (exact resends are dropped by the gateway);
* ``trees`` (session 15, ``--cases trees``): a model of another kind on data nobody tuned
  on: scikit-learn's ``make_classification`` (4,000 rows, 16 features, 8 informative, 4
  redundant, 3 classes, min-max to [0, 1]), a ``HistGradientBoostingClassifier`` (100
  boosting rounds; piecewise-constant scores: a step often leaves them unchanged). Calibration
  sample: 1,000 of the 2,000 training rows; benign pool: the 2,000 held-out rows but the
  attacked ones, read again by the logger once used.

The attack, as a stranger writes it from the papers: a random search in the Linf ball
of 0.1 of the range (Andriushchenko et al., "Square Attack", arXiv:1912.00049; Guo et
al., "Simple Black-box Adversarial Attacks", arXiv:1905.07121): each step sets a random
5% of the coordinates (at least 2) of the perturbation to +-0.1 and keeps the step when
the true class's score drops; every query carries fresh Gaussian noise of ``sigma`` of
the range (the adaptive attack of Chen, Carlini & Wagner, arXiv:1907.05587, and Feng et
al., arXiv:2303.06280, against stateful detection), clipped to the input's range. Plans,
``--runs`` held-out inputs each, ``--budget`` attack queries (300):

* ``noise02`` / ``noise05`` / ``noise10``: sigma 0.02 / 0.05 / 0.1, one key;
* ``paced``: sigma 0.05, a pause after every query (exponential, mean 50 ms) and 10 s
  after every 100 (the runs in parallel, one key each);
* ``mix1`` / ``mix10``: sigma 0.05, 1 / 10 benign queries of the benign pool on the
  same key before each attack query;
* ``keys5``: sigma 0.05, the queries round-robin over 5 keys;
* ``fine`` (session 15, against an excuse for copies: queries within a fraction of the
  similarity radius of one counted before are one input): the search as a walk of small
  steps, each step adding +-``FINE`` (0.01) to its coordinates of the kept perturbation
  (clipped to the ball), with noise of sigma 0.003 (a logger's re-read noise, ~0.002 RMS
  per value): its queries stay within a few hundredths of each other.

Benign clients (``benign`` plan, 1,000 queries each on a key of its own): distinct inputs
of the benign pool, inputs drawn with replacement, drawn with replacement plus N(0, 0.01).

Each plan, and each benign client, meets a fresh gateway of the deployer's config (its own
audit log and detector state; ``gateway calibrate`` runs once a case): the plans attack
the same inputs, and the cross-key rule would otherwise see one plan's keys in the next's;
the mixed plans get one a run (their runs' benign rows overlap).
The detection batch is the default (8): a flag lands on the query that fills a key's batch.

Reported per run, from the gateway's audit log (the attacker never sees it under
``log``): the attack query at which any of the run's keys was first flagged (None: not
within the budget), the alert kinds, and what the attacker held before that flag and
within the budget: ``wrong``, an answer of another class; ``clean``, the search's
perturbation in hand (in the ball, without its noise) is another class by the model.

Run (about 20 minutes on the loaded 2-core box)::

    OMP_NUM_THREADS=1 timeout 3600 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_redteam14.py --out redteam14.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SEED = 14
EPS = 0.1  # the Linf ball, fraction of the range
PLANS = ("noise02", "noise05", "noise10", "paced", "mix1", "mix10", "keys5", "fine", "benign")
SIGMAS = {"noise02": 0.02, "noise10": 0.1, "fine": 0.003}  # every other attack plan: 0.05
FINE = 0.01  # ``fine``: each step moves its coordinates this much (a walk in the ball)
_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# -- the deployer's side: data, model, config, server --------------------------------------
@dataclass
class Case:
    """One deployment: its model file, input shape, calibration sample, attack inputs
    (x, class) and the benign pool the attacker mixes in."""

    name: str
    model: Path
    shape: tuple[int, ...]
    sample: tuple[np.ndarray, np.ndarray]
    targets: list[tuple[np.ndarray, int]]
    pool: np.ndarray
    predict: Callable[[np.ndarray], np.ndarray]  # labels, for judging (not the attacker's)
    vary: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None


def _patches(img: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 16x16 patches of ``img`` (H, W, 3 in [0, 1]) and their half (0 top)."""
    h, w = img.shape[:2]
    r, c = rng.integers(0, h - 16, n), rng.integers(0, w - 16, n)
    x = np.stack(
        [img[i : i + 16, j : j + 16].transpose(2, 0, 1) for i, j in zip(r, c, strict=True)]
    )
    return x.astype(np.float32), (r + 8 >= h // 2).astype(np.int64)


def _photo_set(n: int, seed: int, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, img in enumerate(load_sample_images().images):
        im = np.asarray(img, dtype=np.float32) / 255
        x, half = _patches(im[:, ::-1] if mirror else im, n // 2, rng)
        xs.append(x)
        ys.append(2 * k + half)
    return np.concatenate(xs), np.concatenate(ys)


def _cnn() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, 4))  # fmt: skip


def sure(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices the model gets right with probability at least 0.8 (an input on the
    boundary is adversarial in a query or two: a floor, not a search)."""
    return np.flatnonzero(p[np.arange(len(y)), y] >= 0.8)


def patches_case(tmp: Path) -> Case:
    """The photo-patch classifier (see the module docstring)."""
    import torch

    torch.set_num_threads(1)
    x, y = _photo_set(6000, SEED)
    net = _cnn()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(12):
        for b in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
    net.eval()

    def proba(xs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(np.asarray(xs, dtype=np.float32))).softmax(1).numpy()

    def predict(xs: np.ndarray) -> np.ndarray:
        return proba(xs).argmax(1)

    path = tmp / "patches.ts"
    torch.jit.save(torch.jit.trace(net, xt[:1]), str(path))
    held, hy = _photo_set(400, SEED + 1)
    print(f"patches: CNN held-out accuracy {(predict(held) == hy).mean():.3f}", flush=True)
    ok = sure(proba(held), hy)
    targets = [(held[i], int(hy[i])) for i in ok[:: max(1, len(ok) // 10)][:10]]
    sample = _photo_set(1000, SEED + 2)
    pool = _photo_set(6000, SEED + 3, mirror=True)[0]
    return Case("patches", path, (3, 16, 16), sample, targets, pool, predict)


def diabetes_case(tmp: Path) -> Case:
    """The diabetes-progression classifier (see the module docstring)."""
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = load_diabetes()
    x = ((d.data - d.data.min(0)) / (d.data.max(0) - d.data.min(0))).astype(np.float32)
    y = (d.target > np.median(d.target)).astype(np.int64)
    idx = np.random.default_rng(SEED).permutation(len(x))
    tr, te = idx[:221], idx[221:]
    model = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=3000, random_state=SEED))
    model.fit(x[tr], y[tr])
    print(f"diabetes: MLP held-out accuracy {model.score(x[te], y[te]):.3f}", flush=True)
    path = tmp / "diabetes.joblib"
    joblib.dump(model, path)
    ok = te[sure(model.predict_proba(x[te]), y[te])]
    targets = [(x[i], int(y[i])) for i in ok[:10]]
    pool = np.delete(x, np.concatenate([tr, ok[:10]]), axis=0)
    return Case("diabetes", path, (10,), (x[tr], y[tr]), targets, pool,
                lambda xs: model.predict(np.asarray(xs).reshape(len(xs), -1)), logger)  # fmt: skip


def trees_case(tmp: Path) -> Case:
    """A gradient-boosted tree ensemble on a synthetic table (session 15's third case)."""
    import joblib
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = make_classification(n_samples=4000, n_features=16, n_informative=8, n_redundant=4,
                               n_classes=3, class_sep=1.2, random_state=SEED)  # fmt: skip
    x = ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)
    idx = np.random.default_rng(SEED).permutation(len(x))
    tr, te = idx[:2000], idx[2000:]
    model = HistGradientBoostingClassifier(max_iter=100, random_state=SEED).fit(x[tr], y[tr])
    print(f"trees: gradient boosting held-out accuracy {model.score(x[te], y[te]):.3f}", flush=True)
    path = tmp / "trees.joblib"
    joblib.dump(model, path)
    ok = te[sure(model.predict_proba(x[te]), y[te])]
    targets = [(x[i], int(y[i])) for i in ok[:10]]
    pool = x[np.setdiff1d(te, ok[:10])]
    sample = (x[tr[:1000]], y[tr[:1000]])
    return Case("trees", path, (16,), sample, targets, pool,
                lambda xs: model.predict(np.asarray(xs).reshape(len(xs), -1)), logger)  # fmt: skip


def logger(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A row read again by a sensor logger: x (1 + N(0, 0.003)), rounded to 1/400."""
    return np.clip(np.round(x * (1 + rng.normal(0, 0.003, x.shape)) * 400) / 400, 0, 1)


def write_config(path: Path, case: Case, keys: dict[str, str]) -> None:
    """The gateway's YAML as its docs describe it: input, generous limits, ``action: log``,
    the audit log, one ``scores`` key a name."""
    from mlwarden.serve.auth import hash_key

    lines = [f"input: {{shape: {list(case.shape)}, range: [0.0, 1.0], max_batch: 64}}",
             "limits: {rate: 100000, burst: 100000, budget: 100000000}",
             "detection: {action: log}", f"audit: {{path: {path.parent / 'audit.db'}}}",
             "keys:"]  # fmt: skip
    lines += [f"  {name}: {{hash: '{hash_key(k)}', role: scores}}" for name, k in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def calibrate(cfg: Path, case: Case) -> Path:
    """``mlwarden gateway calibrate`` on the deployer's plain sample; the config it writes."""
    sample = cfg.parent / "sample.npz"
    np.savez(sample, x=case.sample[0], y=case.sample[1])
    out = cfg.parent / "gw.calibrated.yaml"
    cmd = [sys.executable, "-m", "mlwarden", "gateway", "calibrate", str(cfg), str(sample),
           "--out", str(out), "--model", str(case.model), "--quiet"]  # fmt: skip
    subprocess.run(cmd, check=True, env=_ENV, stdout=subprocess.DEVNULL)
    return out


def serve(case: Case, cfg: Path) -> tuple[subprocess.Popen[str], str]:
    """``mlwarden serve`` on a free port: the process and its host:port."""
    cmd = [sys.executable, "-m", "mlwarden", "serve", str(case.model), "--config", str(cfg),
           "--port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_ENV)  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "ready at " in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, line.split("ready at http://")[1].split()[0]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"mlwarden serve did not start for {case.name}")


def audit_alerts(db: Path) -> dict[str, str]:
    """Request id -> its alerts, from the gateway's audit log (the judge's view)."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT request_id, alerts FROM requests").fetchall()
    con.close()
    return {rid: alerts or "" for rid, alerts in rows}


# -- the attacker's side: its own client and search ----------------------------------------
class Client:
    """One API key's kept-alive connection: each query one request, its answer the class
    probabilities; every request id remembered (the judge reads them)."""

    def __init__(self, host: str, key: str) -> None:
        self.host, self.key = host, key
        self.conn = http.client.HTTPConnection(host, timeout=60)
        self.ids: list[tuple[str, int]] = []  # (request id, attack query number; 0: benign)

    def ask(self, x: np.ndarray, attack_no: int = 0) -> np.ndarray:
        body = json.dumps({"inputs": [np.asarray(x, dtype=np.float32).tolist()]})
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        for retry in range(3):
            try:
                self.conn.request("POST", "/v1/predict", body, headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, timeout=60)
                if retry == 2:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        self.ids.append((resp.getheader("X-Request-Id") or "", attack_no))
        return np.asarray(json.loads(data)["predictions"][0], dtype=np.float64)


@dataclass
class Run:
    """One attack run's keys and what the attacker held after each attack query."""

    clients: list[Client]
    wrong: list[bool] = field(default_factory=list)  # an answer of another class
    clean: list[np.ndarray] = field(default_factory=list)  # the perturbation in hand
    pause: Callable[[int], None] | None = None
    before: Callable[[Client, int], None] | None = None  # benign traffic before query t


def search(run: Run, x0: np.ndarray, y0: int, sigma: float, budget: int, seed: int,
           step: float | None = None) -> None:  # fmt: skip
    """The noisy random search (module docstring): Linf ``EPS``, fresh N(0, sigma) a query;
    with ``step``, each step adds +-``step`` to its coordinates instead of setting them to
    +-``EPS`` (``fine``: a walk of small steps, clipped to the ball)."""
    rng = np.random.default_rng(seed)
    delta, best = np.zeros_like(x0, dtype=np.float64), np.inf
    k = max(2, round(0.05 * x0.size))
    for t in range(budget):
        client = run.clients[t % len(run.clients)]
        if run.before is not None:
            run.before(client, t + 1)
        flat = delta.copy().reshape(-1)
        at = rng.choice(x0.size, k, replace=False)
        if step is None:
            flat[at] = rng.choice([-EPS, EPS], k)
        else:
            flat[at] = np.clip(flat[at] + rng.choice([-step, step], k), -EPS, EPS)
        cand = flat.reshape(x0.shape)
        q = np.clip(x0 + cand + rng.normal(0, sigma, x0.shape), 0, 1)
        p = client.ask(q, t + 1)
        run.wrong.append(int(p.argmax()) != y0)
        if p[y0] < best:
            best, delta = float(p[y0]), cand
        run.clean.append(delta.copy())
        if run.pause is not None:
            run.pause(t + 1)


class Pool:
    """The benign pool as one client walks it: each row once from ``offset``, then (a
    table's) rows again through the case's ``vary`` (an exact resend would be dropped)."""

    def __init__(self, case: Case, offset: int, seed: int) -> None:
        self.case, self.i, self.offset = case, 0, offset
        self.rng = np.random.default_rng(seed)

    def next(self) -> np.ndarray:
        n = len(self.case.pool)
        cycle, j = divmod(self.i, n)
        self.i += 1
        x = self.case.pool[(self.offset + j) % n]
        if cycle and self.case.vary is None:
            raise ValueError(f"{self.case.name}: benign pool of {n} rows used up")
        return self.case.vary(x, self.rng) if cycle and self.case.vary else x


def _mixer(pool: Pool, k: int) -> Callable[[Client, int], None]:
    def before(client: Client, t: int) -> None:
        for _ in range(k):
            client.ask(pool.next(), -t)  # benign, sent before attack query t

    return before


def _pacer(seed: int) -> Callable[[int], None]:
    rng = np.random.default_rng(seed)

    def pause(t: int) -> None:
        time.sleep(rng.exponential(0.05) + (10.0 if t % 100 == 0 else 0.0))

    return pause


def attack_run(case: Case, plan: str, run: int, host: str, keys: dict[str, str],
               budget: int) -> tuple[Run, np.ndarray, int]:  # fmt: skip
    """One run of an attack ``plan`` on target ``run``: (its Run, x0, y0)."""
    x0, y0 = case.targets[run]
    names = [f"{plan}-{run}-{k}" for k in range(5 if plan == "keys5" else 1)]
    r = Run([Client(host, keys[n]) for n in names])
    if plan == "paced":
        r.pause = _pacer(run)
    if plan.startswith("mix"):
        r.before = _mixer(Pool(case, run * 3 * budget, run), int(plan[3:]))
    step = FINE if plan == "fine" else None
    search(
        r, np.asarray(x0, dtype=np.float64), y0, SIGMAS.get(plan, 0.05), budget, SEED + run, step
    )
    return r, x0, y0


def benign_run(case: Case, form: str, host: str, key: str, n: int) -> Client:
    """A benign client of ``form`` (distinct / replacement / noise) on its own key."""
    c, rng = Client(host, key), np.random.default_rng(SEED + len(form))
    pool = Pool(case, 0, SEED)
    for _ in range(n):
        if form == "distinct":
            x = pool.next()
        else:
            x = case.pool[int(rng.integers(len(case.pool)))]
            if form == "noise":
                x = np.clip(x + rng.normal(0, 0.01, x.shape), 0, 1)
        c.ask(x)
    return c


# -- the judge: the audit log and the model --------------------------------------------
def judge(case: Case, r: Run, x0: np.ndarray, y0: int, alerts: dict[str, str],
          budget: int) -> dict[str, Any]:  # fmt: skip
    """First flag (attack query; a flag on benign traffic sent before query t counts at
    t), its alert kinds, whether it fell on a benign query, and what was held."""
    first, kinds, on_benign, on_attack = None, "", False, None
    for c in r.clients:
        for rid, t in c.ids:
            if alerts.get(rid) and (first is None or abs(t) < first):
                first, kinds, on_benign = abs(t), alerts[rid], t < 0
            if alerts.get(rid) and t > 0 and (on_attack is None or t < on_attack):
                on_attack = t
    sent = len(r.wrong)

    def held(upto: int) -> dict[str, bool]:
        if upto == 0:
            return {"wrong": False, "clean": False}
        x = np.clip(x0 + r.clean[upto - 1], 0, 1).astype(np.float32)[None]
        return {"wrong": any(r.wrong[:upto]), "clean": bool(case.predict(x)[0] != y0)}

    wrong_at = r.wrong.index(True) + 1 if any(r.wrong) else None
    return {"first": first, "alerts": kinds, "on_benign": on_benign, "sent": sent, "wrong_at": wrong_at, "on_attack": on_attack,
            "at_flag": held(first - 1 if first else sent), "all": held(sent)}  # fmt: skip


def parallel(case: Case, plan: str, host: str, keys: dict[str, str],
             args: argparse.Namespace) -> list[Any]:  # fmt: skip
    """Every run of ``plan`` at once, a thread each (paced runs sleep most of the time)."""
    out: list[Any] = [None] * args.runs

    def one(i: int) -> None:
        out[i] = attack_run(case, plan, i, host, keys, args.budget)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.runs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return out


def run_plan(case: Case, plan: str, host: str, keys: dict[str, str],
             args: argparse.Namespace, runs: list[int]) -> list[Any]:  # fmt: skip
    """One plan's ``runs`` (``paced``'s in parallel threads; ``benign-FORM``: one client)."""
    if plan.startswith("benign-"):
        form = plan.partition("-")[2]
        return [benign_run(case, form, host, keys[plan], args.n)]
    if plan == "paced":
        return parallel(case, plan, host, keys, args)
    return [attack_run(case, plan, i, host, keys, args.budget) for i in runs]


def on_fresh_gateways(case: Case, plan: str, cfg: Path, keys: dict[str, str],
                      args: argparse.Namespace) -> Any:  # fmt: skip
    """``plan`` on gateways of its own: one for all its runs, or, for the mixed plans
    (whose runs' benign rows overlap: the cross-key rule would see the same natural row
    on two keys), one a run."""
    if not plan.startswith("mix"):
        return on_fresh_gateway(case, plan, cfg, keys, args, list(range(args.runs)))
    return [r for i in range(args.runs) for r in on_fresh_gateway(case, plan, cfg, keys, args, [i])]


def on_fresh_gateway(case: Case, plan: str, cfg: Path, keys: dict[str, str],
                     args: argparse.Namespace, runs: list[int]) -> Any:  # fmt: skip
    """``plan``'s ``runs`` on a gateway of their own (fresh audit log and detector state,
    so no plan meets another's keys: they attack the same inputs), judged from its log."""
    d = cfg.parent / f"{plan}-{runs[0]}"
    d.mkdir()
    own = d / "gw.yaml"
    own.write_text(cfg.read_text().replace(str(cfg.parent / "audit.db"), str(d / "audit.db")))
    own.chmod(0o600)
    t0 = time.time()
    proc, host = serve(case, own)
    try:
        done = run_plan(case, plan, host, keys, args, runs)
    finally:
        proc.terminate()
        proc.wait(30)
    alerts = audit_alerts(d / "audit.db")
    print(f"{case.name} {plan}: sent in {time.time() - t0:.0f} s", flush=True)
    if plan.startswith("benign-"):
        return benign_cell(done[0], alerts)
    return [judge(case, r, x0, y0, alerts, args.budget) for r, x0, y0 in done]


def benign_cell(c: Client, alerts: dict[str, str]) -> dict[str, Any]:
    """A benign client's flagged requests per 1,000 and the alert kinds that fired."""
    hit = [alerts[rid] for rid, _ in c.ids if alerts.get(rid)]
    kinds = sorted({a.split("@")[0] for h in hit for a in h.split(",")})
    return {"per_1000": round(1000 * len(hit) / max(len(c.ids), 1), 1), "alerts": kinds}


FORMS = ("distinct", "replacement", "noise")


def key_names(args: argparse.Namespace) -> list[str]:
    names = [f"{p}-{i}-{k}" for p in args.plans if p != "benign" for i in range(args.runs)
             for k in range(5 if p == "keys5" else 1)]  # fmt: skip
    return names + [f"benign-{f}" for f in FORMS]


def run_case(case: Case, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The deployer's config (calibrated once unless ``--defaults``), then every plan on
    a fresh gateway of that config; the benign clients each on their own."""
    from mlwarden.serve.auth import new_key

    keys = {n: new_key() for n in key_names(args)}
    cfg = tmp / "gw.yaml"
    write_config(cfg, case, keys)
    if not args.defaults:
        t0 = time.time()
        cfg = calibrate(cfg, case)
        print(f"{case.name}: calibrated in {time.time() - t0:.0f} s", flush=True)
    row: dict[str, Any] = {}
    for plan in args.plans:
        if plan == "benign":
            row[plan] = {f: on_fresh_gateways(case, f"benign-{f}", cfg, keys, args) for f in FORMS}
        else:
            row[plan] = on_fresh_gateways(case, plan, cfg, keys, args)
        print(f"{case.name} {plan}: {json.dumps(row[plan])}", flush=True)
    return row


# -- the table ---------------------------------------------------------------------------
def cell(res: list[dict[str, Any]]) -> str:
    hit = [r["first"] for r in res if r["first"]]
    kinds = sorted({a.split("@")[0] for r in res for a in r["alerts"].split(",") if a})
    text = f"{len(hit)}/{len(res)}"
    text += f" at {', '.join(str(r['first']) for r in res)} ({', '.join(kinds)})" if hit else ""
    text += "; first wrong answer at " + ", ".join(str(r["wrong_at"]) for r in res)
    if any(r["on_benign"] for r in res):
        text += f"; {sum(r['on_benign'] for r in res)} first on a benign query (first on an "
        text += f"attack query: {', '.join(str(r.get('on_attack')) for r in res)})"
    for part, label in (("at_flag", "before the flag"), ("all", "in the budget")):
        a = [r[part] for r in res]
        text += f"; {label}: {sum(x['wrong'] for x in a)}/{len(a)} wrong answer, "
        text += f"{sum(x['clean'] for x in a)}/{len(a)} clean perturbation adversarial"
    return text


def table(results: dict[str, Any]) -> None:
    print("\n| case | plan | flagged within the budget (first flag per run) and what was held |")
    print("|---|---|---|")
    for name, row in results.items():
        for plan, res in row.items():
            if plan == "benign":
                forms = " / ".join(f"{v['per_1000']:g}" for v in res.values())
                kinds = sorted({k for v in res.values() for k in v["alerts"]})
                forms += f" ({', '.join(kinds)})" if kinds else ""
                print(
                    f"| {name} | benign distinct / replacement / noise 0.01 | {forms} per 1,000 |"
                )
            elif plan != "seconds":
                print(f"| {name} | {plan} | {cell(res)} |")


CASES = {"patches": patches_case, "diabetes": diabetes_case, "trees": trees_case}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--cases", default="patches,diabetes", help=f"comma-separated: {', '.join(CASES)}"
    )
    ap.add_argument("--plans", default=",".join(PLANS), help=f"comma-separated: {', '.join(PLANS)}")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--n", type=int, default=1000, help="queries per benign client")
    ap.add_argument("--defaults", action="store_true", help="the default detection config "
                    "(no gateway calibrate)")  # fmt: skip
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    args.plans = args.plans.split(",")
    if unknown := set(args.plans) - set(PLANS):
        raise SystemExit(f"unknown plans: {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {}
    for name in args.cases.split(","):
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="mlw-rt14-") as d:
            case = CASES[name](Path(d))
            results[name] = run_case(case, Path(d), args)
        results[name]["seconds"] = round(time.time() - t0)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    table(results)
    return results


if __name__ == "__main__":
    main()
