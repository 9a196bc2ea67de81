"""Gateway stream detectors on cases built elsewhere: ART's published black-box attacks.

Every other detection benchmark attacks the gateway with our own noisy random search and
feeds it our own benign streams. Here the attacks are the published black-box attacks as
the Adversarial Robustness Toolbox (ART 1.20, installed by the ``dev`` extra) implements
them, at their published / ART's default settings, and the benign clients are built
differently from ours (augmentations, several users behind one key, retries, batches).

The gateway path is run in-process, as the other detection benchmarks do: each request
(an ART ``predict`` call, split into requests of at most 64 rows, the gateway's default
``max_batch``) is answered by the model and fed to ``mlwarden.serve.monitor.Monitor``
exactly as ``mlwarden serve`` does after parsing it (``inspect``: alerts of the request
itself). The transport does not change what the detectors see. Settings come from
``gateway calibrate`` on the user's own benign sample (plain held-out inputs, not the
augmented traffic), as the guide tells users; one key per case.

Models and data (local, nothing downloaded at run time), unlike the other benchmarks'
logistic regressions on tinted digits / breast cancer / synthetic tables:

* **mnist28**: the bundled MNIST-5k digits at 1x28x28, a small torch CNN (2 conv layers)
  trained on 2,500 of them;
* **wine**: scikit-learn's wine table (178 rows, 13 features, 3 classes), min-max scaled,
  a scikit-learn MLP (one hidden layer of 32).

Attacks (untargeted; the gateway answers probabilities), each on 3 inputs the model gets
right, capped at ``--cap`` queries (the attack is stopped at the first flag or the cap):

* HopSkipJump (Chen et al. 2020, arXiv:1904.02144; ART defaults: L2, max_iter 50,
  max_eval 10,000, init_eval 100, init_size 100), decision-based;
* Boundary attack (Brendel et al. 2018, arXiv:1712.04248; ART defaults: delta 0.01,
  epsilon 0.01, step_adapt 0.667, num_trial 25, sample_size 20, init_size 100);
* Square Attack (Andriushchenko et al. 2020, arXiv:1912.00049; Linf, MNIST eps 0.3,
  p_init 0.8 as published for MNIST), images only;
* SimBA (Guo et al. 2019, arXiv:1905.07121; pixel basis, epsilon 0.2, ART defaults),
  images only;
* ZOO (Chen et al. 2017, arXiv:1708.03999; Adam coordinate descent, 128 coordinates a
  step, h 1e-4, learning rate 1e-2, 10 iterations, 1 binary-search step);
* Jacobian-based dataset augmentation (Papernot et al. 2017, arXiv:1602.02697; 150 seed
  inputs, lambda 0.1, 6 substitute epochs; our implementation: ART has none), and
  Knockoff Nets (Orekondy et al. 2019, arXiv:1812.02766; ART, random strategy, 1,000
  stolen inputs from the same distribution): model extraction.

Each evasion attack also runs with fresh N(0, 0.05 of the range) noise added to every
query before it is sent (the adaptive attacker of Feng et al., CCS 2023,
arXiv:2303.06280), and diluted: 10 benign queries of the same key (the augmentation
client's) before every attack query. Reported per case: flagged (and at which of the
attack's own queries, by which detectors), or not (and the queries the attack used, and
whether it succeeded).

Benign clients, 2,000 queries each (one key each): ``augment`` (images: random crop
shift of up to 2 px, horizontal flip half the time, brightness x U(0.8, 1.2); tables:
each value x U(0.97, 1.03), a unit conversion / sensor drift), ``users4`` (four users
behind one key sending the same 200 popular inputs, each through its own fixed
pipeline: as is, brighter, shifted, re-encoded),
``retry`` (a client on a flaky network: each request resent 1-3 times, the resends
sometimes after other requests), ``batch`` (requests of 32 distinct inputs). Reported:
flagged queries per 1,000.

Run (about 10 minutes on the loaded 2-core box)::

    OMP_NUM_THREADS=1 timeout 1800 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_heldout.py --out heldout.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.serve.calibrate import calibrate
from mlwarden.serve.config import Detection, GatewayConfig
from mlwarden.serve.monitor import Monitor

SEED = 0
MAX_BATCH = 64  # the gateway's default max_batch: a larger ART batch is several requests
SIGMA = 0.05
DILUTE = 10
BENIGN = 2000


class Stop(Exception):
    """Raised inside ART's predict: the key was flagged or the query cap reached."""


@dataclass
class Case:
    """One deployment: data in its range, a model's probabilities, calibration rows."""

    name: str
    x: np.ndarray  # held-out pool (attack seeds, benign clients)
    y: np.ndarray
    calib: tuple[np.ndarray, np.ndarray]
    proba: Callable[[np.ndarray], np.ndarray]
    classes: int
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    image: bool

    def monitor(self, det: Detection) -> Monitor:
        return Monitor(det, shape=list(self.x.shape[1:]), scale=1.0)


class Gateway:
    """The served path for one key: model answer + ``Monitor.inspect`` per request."""

    def __init__(self, case: Case, mon: Monitor, cap: int, sigma: float = 0.0,
                 dilute: int = 0, seed: int = 0) -> None:  # fmt: skip
        self.case, self.mon, self.cap, self.sigma, self.dilute = case, mon, cap, sigma, dilute
        self.rng = np.random.default_rng(seed)
        self.sent = 0  # the attack's own queries
        self.flag: str | None = None

    def _benign(self, n: int) -> None:
        """``n`` one-row requests of the augmentation client on the same key."""
        pool = self.case.x
        for _ in range(n):
            row = self.case.augment(pool[self.rng.integers(0, len(pool))][None], self.rng)
            p = self.case.proba(row)
            self.mon.inspect("k", row, p.argmax(axis=1), p)  # answers: serve/answers.py

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = []
        x = np.asarray(x, dtype=np.float32).reshape(len(x), *self.case.x.shape[1:])
        for s in range(0, len(x), MAX_BATCH):
            q = x[s : s + MAX_BATCH]
            if self.sigma:
                q = np.clip(q + self.rng.normal(0, self.sigma, q.shape), 0, 1).astype(np.float32)
            self._benign(self.dilute * len(q))
            p = self.case.proba(q)
            found = self.mon.inspect("k", q, p.argmax(axis=1), p)
            if found:
                first = min(min(v) for v in found.values())
                self.flag = f"{self.sent + first + 1} {'+'.join(sorted(found))}"
            self.sent += len(q)
            if self.flag is not None or self.sent >= self.cap:
                raise Stop
            out.append(p)
        return np.concatenate(out)


def mnist_case() -> Case:
    import torch

    from mlwarden.core.data import load_dataset

    ds = load_dataset("mnist5k")
    x = ds.x.reshape(-1, 1, 28, 28).astype(np.float32)
    y = np.asarray(ds.y, dtype=np.int64)
    idx = np.random.default_rng(SEED).permutation(len(x))
    tr, ca, held = idx[:2500], idx[2500:3500], idx[3500:]
    torch.manual_seed(SEED)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(512, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xt, yt = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
    for _ in range(8):
        for b in torch.randperm(len(tr)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
    net.eval()

    def proba(q: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(np.asarray(q, dtype=np.float32).reshape(-1, 1, 28, 28))
            return torch.softmax(net(t), dim=1).numpy()

    def augment(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros_like(rows)
        for i, r in enumerate(rows):
            dy, dx = rng.integers(-2, 3, 2)
            r = np.roll(r, (int(dy), int(dx)), axis=(1, 2))
            if rng.random() < 0.5:
                r = r[:, :, ::-1]
            out[i] = np.clip(r * rng.uniform(0.8, 1.2), 0, 1)
        return out

    acc = float((proba(x[held]).argmax(axis=1) == y[held]).mean())
    print(f"mnist28: CNN held-out accuracy {acc:.3f}", flush=True)
    return Case("mnist28", x[held], y[held], (x[ca], y[ca]), proba, 10, augment, True)


def wine_case() -> Case:
    from sklearn.datasets import load_wine
    from sklearn.neural_network import MLPClassifier

    d = load_wine()
    lo, hi = d.data.min(axis=0), d.data.max(axis=0)
    x = ((d.data - lo) / (hi - lo)).astype(np.float32)
    y = d.target
    idx = np.random.default_rng(SEED).permutation(len(x))
    tr, ca, held = idx[:60], idx[60:120], idx[120:]
    model = MLPClassifier((32,), max_iter=2000, random_state=SEED).fit(x[tr], y[tr])

    def proba(q: np.ndarray) -> np.ndarray:
        return model.predict_proba(np.asarray(q).reshape(len(q), -1)).astype(np.float32)

    def augment(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(rows * rng.uniform(0.97, 1.03, rows.shape), 0, 1).astype(np.float32)

    acc = float((proba(x[held]).argmax(axis=1) == y[held]).mean())
    print(f"wine: MLP held-out accuracy {acc:.3f}", flush=True)
    return Case("wine", x[held], y[held], (x[ca], y[ca]), proba, 3, augment, False)


def calibrated(case: Case) -> tuple[Detection, dict[str, Any]]:
    """``gateway calibrate`` on the user's own benign sample (plain held-out rows)."""
    x, y = case.calib
    cfg = GatewayConfig.model_validate({"input": {"shape": list(x.shape[1:]), "range": [0.0, 1.0]}})
    result = calibrate(cfg, x, y, seed=SEED)
    summary = result.summary()
    summary.pop("tried")
    return result.detection, summary


def _classifier(gw: Gateway) -> Any:
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    return BlackBoxClassifierNeuralNetwork(gw, tuple(gw.case.x.shape[1:]), gw.case.classes,
                                           clip_values=(0.0, 1.0))  # fmt: skip


def _evasion(name: str, clf: Any, image: bool) -> Any:
    from art.attacks import evasion as ev

    if name == "hopskipjump":
        return ev.HopSkipJump(clf, verbose=False)
    if name == "boundary":
        return ev.BoundaryAttack(clf, targeted=False, verbose=False)
    if name == "square":
        return ev.SquareAttack(clf, eps=0.3, p_init=0.8, max_iter=5000, verbose=False)
    if name == "simba":
        return ev.SimBA(clf, attack="px", epsilon=0.2, verbose=False)
    if name == "zoo":
        return ev.ZooAttack(clf, nb_parallel=128 if image else 13, use_resize=False,
                            use_importance=False, verbose=False)  # fmt: skip
    raise ValueError(name)


def evasion(case: Case, det: Detection, name: str, seed: int, cap: int, sigma: float,
            dilute: int) -> dict[str, Any]:  # fmt: skip
    """One attack on held-out input ``seed``: first flag, or queries used and success."""
    gw = Gateway(case, case.monitor(det), cap, sigma, dilute, seed)
    x0, y0 = case.x[seed : seed + 1], int(case.y[seed])
    attack = _evasion(name, _classifier(gw), case.image)
    np.random.seed(SEED + seed)  # ART draws from numpy's global generator: reproducible runs
    try:
        adv = attack.generate(x0)
    except Stop:
        adv = None
    out: dict[str, Any] = {"flag": gw.flag, "queries": gw.sent}
    if adv is not None:
        out["success"] = bool(case.proba(adv).argmax() != y0)
        out["l2"] = round(float(np.linalg.norm(adv - x0)), 3)
    return out


def jacobian_extraction(case: Case, det: Detection, cap: int, seed: int = 0) -> dict[str, Any]:
    """Papernot et al.'s Jacobian-based augmentation (arXiv:1602.02697;
    :func:`mlwarden.privacy.extraction.jacobian_augmentation`): 150 natural seeds, 6 rounds."""
    from mlwarden.privacy.extraction import jacobian_augmentation

    gw = Gateway(case, case.monitor(det), cap, seed=seed)
    rng = np.random.default_rng(seed)
    xs = case.x[rng.permutation(len(case.x))[:150]]
    with contextlib.suppress(Stop):
        jacobian_augmentation(lambda x: gw(x).argmax(axis=1), xs, case.classes, seed=seed)
    return {"flag": gw.flag, "queries": gw.sent}


def knockoff(case: Case, det: Detection, cap: int, seed: int = 0) -> dict[str, Any]:
    """ART's Knockoff Nets (random strategy) stealing into a small torch net."""
    import torch
    from art.attacks.extraction import KnockoffNets
    from art.estimators.classification import PyTorchClassifier

    gw = Gateway(case, case.monitor(det), cap, seed=seed)
    d = int(np.prod(case.x.shape[1:]))
    torch.manual_seed(seed)
    np.random.seed(SEED + seed)  # ART's sampling of the stolen inputs
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, case.classes))  # fmt: skip
    thief = PyTorchClassifier(net, torch.nn.CrossEntropyLoss(),
                              tuple(case.x.shape[1:]), case.classes,
                              optimizer=torch.optim.Adam(net.parameters(), 1e-3),
                              clip_values=(0.0, 1.0))  # fmt: skip
    attack = KnockoffNets(_classifier(gw), batch_size_fit=64, batch_size_query=64, nb_epochs=5,
                          nb_stolen=min(1000, len(case.x)), sampling_strategy="random",
                          verbose=False)  # fmt: skip
    with contextlib.suppress(Stop):
        attack.extract(case.x, thieved_classifier=thief)
    return {"flag": gw.flag, "queries": gw.sent}


def _requests(case: Case, client: str, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The requests of one benign client, ``n`` queries in all."""
    pool = case.x
    if client == "augment":
        return [case.augment(pool[rng.integers(0, len(pool))][None], rng) for _ in range(n)]
    if client == "users4":
        # four users behind one key send the same popular 200 inputs, each through its own
        # fixed pipeline: as is, brightness x 1.1, shifted / scaled slightly, re-encoded
        # (N(0, 0.005) once per input and user)
        popular = pool[rng.permutation(len(pool))[:200]]
        k = len(popular)
        enc = np.clip(popular + rng.normal(0, 0.005, popular.shape), 0, 1)
        moved = np.roll(popular, 1, axis=-1) if case.image else popular * 0.98
        views = [popular, np.clip(popular * 1.1, 0, 1), moved, enc]
        return [views[rng.integers(0, 4)][rng.integers(0, k)][None].astype(np.float32)
                for _ in range(n)]  # fmt: skip
    if client == "retry":  # a flaky network: 0-2 resends, each after 0-2 other requests
        reqs: list[np.ndarray] = []
        due: list[tuple[int, np.ndarray]] = []
        for i in rng.permutation(len(pool)).tolist() * (n // len(pool) + 1):
            if len(reqs) >= n:
                break
            reqs.append(pool[i][None])
            due += [(len(reqs) + int(rng.integers(0, 3)), pool[i][None])
                    for _ in range(int(rng.integers(0, 3)))]  # fmt: skip
            reqs += [r for t, r in due if t <= len(reqs)]
            due = [(t, r) for t, r in due if t > len(reqs)]
        return reqs[:n]
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(n // len(pool) + 1)])
    return [pool[order[s : s + 32]] for s in range(0, n, 32)]  # batch: 32 distinct inputs


def benign(case: Case, det: Detection, client: str, n: int = BENIGN) -> dict[str, Any]:
    """Flagged queries per 1,000 for one benign client (augment, users4, retry, batch)."""
    mon = case.monitor(det)
    flagged = sent = 0
    kinds: dict[str, int] = {}
    for r in _requests(case, client, n, np.random.default_rng(SEED + 7)):
        p = case.proba(r)
        found = mon.inspect("k", r, p.argmax(axis=1), p)
        flagged += len({j for v in found.values() for j in v})
        sent += len(r)
        for k, v in found.items():
            kinds[k] = kinds.get(k, 0) + len(v)
    return {"queries": sent, "per_1000": round(1000 * flagged / sent, 1), **kinds}


ATTACKS = ("hopskipjump", "boundary", "square", "simba", "zoo")


def run_case(case: Case, cap: int, runs: int, only: set[str] | None) -> dict[str, Any]:
    t0 = time.time()
    det, summary = calibrated(case)
    row: dict[str, Any] = {"calibration": summary}
    print(f"{case.name}: calibrated {json.dumps(summary)}", flush=True)
    row["benign"] = {c: benign(case, det, c) for c in ("augment", "users4", "retry", "batch")}
    print(f"{case.name} benign: {json.dumps(row['benign'])}", flush=True)
    right = [i for i in range(len(case.x)) if case.proba(case.x[i : i + 1]).argmax() == case.y[i]]
    for name in ATTACKS:
        if (only and name not in only) or (name in ("square", "simba") and not case.image):
            continue
        for plan, sigma, dil in (("plain", 0.0, 0), ("noise0.05", SIGMA, 0),
                                 ("diluted1:10", 0.0, DILUTE)):  # fmt: skip
            res = [evasion(case, det, name, right[i], cap, sigma, dil) for i in range(runs)]
            row[f"{name} {plan}"] = res
            print(f"{case.name} {name} {plan}: {json.dumps(res)}", flush=True)
    if not only or "extraction" in only:
        row["jacobian"] = jacobian_extraction(case, det, cap)
        row["knockoff"] = knockoff(case, det, cap)
        print(f"{case.name} extraction: {row['jacobian']} {row['knockoff']}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def _cell(res: list[dict[str, Any]]) -> str:
    hit = [r["flag"] for r in res if r["flag"]]
    firsts = sorted(int(f.split()[0]) for f in hit)
    dets = sorted({d for f in hit for d in f.split()[1].split("+")})
    miss = [r for r in res if not r["flag"]]
    text = f"{len(hit)}/{len(res)}"
    if hit:
        text += f" at {firsts[0]}-{firsts[-1]} ({', '.join(dets)})"
    if miss:
        done = [f"{r['queries']}{'' if 'success' not in r else ' ok' if r['success'] else ' failed'}"
                for r in miss]  # fmt: skip
        text += f"; missed: {', '.join(done)}"
    return text


def table(results: dict[str, Any]) -> None:
    print("\n| input | attack | plain | noise 0.05 | diluted 1:10 |")
    print("|---|---|---|---|---|")
    for cname, row in results.items():
        for name in ATTACKS:
            if f"{name} plain" in row:
                cells = [_cell(row[f"{name} {p}"]) for p in ("plain", "noise0.05", "diluted1:10")]
                print(f"| {cname} | {name} | {' | '.join(cells)} |")
        for name in ("jacobian", "knockoff"):
            if name in row:
                print(f"| {cname} | {name} | {_cell([row[name]])} | - | - |")
    print("\n| input | augment | users4 | retry | batch |")
    print("|---|---|---|---|---|")
    for cname, row in results.items():
        b = row["benign"]
        print(f"| {cname} | {' | '.join(str(b[c]['per_1000']) for c in b)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="mnist28,wine")
    ap.add_argument("--only", help=f"comma-separated attacks of {ATTACKS} and 'extraction'")
    ap.add_argument("--cap", type=int, default=3000, help="queries before an attack is stopped")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    makers = {"mnist28": mnist_case, "wine": wine_case}
    results = {}
    for name in args.cases.split(","):
        results[name] = run_case(makers[name](), args.cap, args.runs, only)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    table(results)


if __name__ == "__main__":
    main()
