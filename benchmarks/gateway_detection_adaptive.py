"""Gateway stream detectors against adaptive attackers: dilution, restarts, a known projection.

The adaptive attacks of the stateful-detection literature (Feng et al., CCS 2023,
arXiv:2303.06280; the dilution argument of Blacklight, arXiv:2006.14042), fed in-process
to ``Monitor`` after ``gateway calibrate`` on inputs the streams do not contain (the
input kinds, models, searches and benign pools of ``gateway_detection_long.py``):

* **diluted 1:10 / 1:50**: after 2,000 benign queries, the sigma-0.05 noisy random
  search (300 queries) with 10 or 50 distinct benign queries of the same key before
  each of its queries (text: the word search with a fresh typo); 5 runs (5 seeds);
* **slow pacing across restarts**: the search interleaved 1:4 with a restart (the key's
  state dumped, a fresh ``Monitor``, the state loaded: what ``mlwarden serve`` does on
  restart) every 250 queries, and diluted 1:50 with a restart every 1,000 queries. The
  detectors count queries, not seconds, so days between queries change nothing that a
  restart does not; Blacklight's hashes and PRADA's sets start afresh at a restart, the
  similarity history (and with it the dilution test) survives;
* **an attacker who knows the tabular projection** (scikit-learn's breast-cancer rows,
  calibrated on one half, when calibration measures similarity along principal axes):
  the search of ``gateway_detection_modalities.attack`` with its noise energy (sigma 0.05
  a value) put on the calibrated axes only; 20 runs, alone and after the other held-out
  patients (142 distinct rows) from the same key; benign: the held-out rows, and 10,000
  drawn from them with replacement, without and with N(0, 0.01).

Each attack runs at the calibrated config (the dilution test on where calibrate turned
it on); the diluted ones also with the dilution test off (the detectors before it). Reported: the
attack's own query at which the key is first flagged and by which detectors (None: not
within 300), and flagged benign queries per 1,000 on the long benign streams (10,000
distinct / drawn with replacement / with replacement plus N(0, 0.01); text: a typo).

Run (about 20 minutes on the loaded 2-core box)::

    OMP_NUM_THREADS=1 timeout 3000 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_adaptive.py --out adaptive.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from gateway_detection_long import (  # noqa: E402
    BUDGET,
    SEED,
    WARM,
    Kind,
    N,
    _calibrated,
    attack_benign,
    benign_streams,
    flagged,
    kinds,
    search,
)
from mlwarden.serve.config import Detection  # noqa: E402
from mlwarden.serve.monitor import Monitor  # noqa: E402

# name -> (benign queries before each attack query, restart every N queries (0: never), runs)
PLANS = {
    "diluted 1:10": (10, 0, 5),
    "diluted 1:50": (50, 0, 5),
    "1:4, restart every 250": (4, 250, 5),
    "1:50, restart every 1000": (50, 1000, 5),
}
SIGMA = 0.05


def _restart(kind: Kind, det: Detection, mon: Monitor) -> Monitor:
    """A fresh monitor with the key's state dumped and loaded, as a gateway restart does."""
    blob = mon.dump("k")
    fresh = kind.monitor(det)
    if blob is not None:
        fresh.load("k", blob)
    return fresh


def first_flag(kind: Kind, det: Detection, queries: Any, benign: tuple[np.ndarray, np.ndarray],
               every: int, restart: int) -> str | None:  # fmt: skip
    """After ``WARM`` benign queries, '<attack query> <detectors>' of the first flag."""
    mon = kind.monitor(det)
    bf, bl = benign
    af, al = kind.feats(det, queries), kind.labels(queries)
    sent = 0

    def send(f: np.ndarray, lab: np.ndarray) -> dict[str, list[int]]:
        nonlocal mon, sent
        sent += 1
        if restart and sent % restart == 0:
            mon = _restart(kind, det, mon)
        return mon.inspect("k", f, lab)

    for j in range(WARM):
        send(bf[j : j + 1], bl[j : j + 1])
    b = WARM
    for i in range(len(af)):
        for _ in range(every):
            send(bf[b : b + 1], bl[b : b + 1])
            b += 1
        found = send(af[i : i + 1], al[i : i + 1])
        if found:
            return f"{i + 1} {'+'.join(sorted(found))}"
    return None


def attacks(kind: Kind, det: Detection, cache: dict[int, Any],
            plans: tuple[str, ...] | None = None) -> dict[str, list[str | None]]:  # fmt: skip
    """First flags per plan; the benign queries as in ``gateway_detection_long.attacks``."""
    benign = attack_benign(kind, det)
    out: dict[str, list[str | None]] = {}
    for name in PLANS if plans is None else plans:
        every, restart, runs = PLANS[name]
        flags = []
        for i in range(runs):
            if i not in cache:
                x0, y0 = kind.seeds[i]
                cache[i] = search(kind, x0, y0, SIGMA, seed=i)
            flags.append(first_flag(kind, det, cache[i], benign, every, restart))
        out[name] = flags
        print(f"  {name}: {flags}", flush=True)
    return out


def run_kind(name: str, kind: Kind, benign: bool) -> dict[str, Any]:
    t0 = time.time()
    det, summary = _calibrated(kind)
    off = det.model_copy(deep=True)
    off.dilution.enabled = False
    row: dict[str, Any] = {"calibration": summary, "dilution": det.dilution.model_dump()}
    print(f"{name}: dilution {row['dilution']}", flush=True)
    cache: dict[int, Any] = {}
    row["attacks"] = attacks(kind, det, cache)
    # the detectors before the dilution test, on the plans it was built for
    undiluted = tuple(p for p in ("diluted 1:10", "diluted 1:50") if p in PLANS)
    row["attacks_without_dilution"] = (
        attacks(kind, off, cache, undiluted) if det.dilution.enabled else None
    )
    if benign:
        streams = benign_streams(kind, N)
        row["benign"] = {s: flagged(kind, det, xs) for s, xs in streams.items()}
        print(f"  benign: {json.dumps(row['benign'])}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def projection_aware(runs: int) -> dict[str, Any]:
    """The search with its noise on the calibrated principal axes (breast-cancer rows)."""
    from sklearn.linear_model import LogisticRegression

    from gateway_detection_modalities import attack, tabular
    from mlwarden.serve.calibrate import calibrate
    from mlwarden.serve.config import GatewayConfig

    x, y, bounds = tabular()
    idx = np.random.default_rng(SEED).permutation(len(x))
    train, pool = idx[: len(x) // 2], idx[len(x) // 2 :]
    model = LogisticRegression(max_iter=500).fit(x[train], y[train])
    half = len(pool) // 2
    cfg = GatewayConfig.model_validate(
        {"input": {"shape": list(x.shape[1:]), "range": list(bounds)}}
    )
    result = calibrate(cfg, x[pool[:half]], y[pool[:half]], seed=SEED)
    det = result.detection
    out: dict[str, Any] = {"dilution": det.dilution.model_dump(),
                           "axes": None if det.similarity.projection is None
                           else len(det.similarity.projection.components)}  # fmt: skip
    if det.similarity.projection is None:
        return out
    axes = np.asarray(det.similarity.projection.components)
    off = det.model_copy(deep=True)
    off.dilution.enabled = False
    held = pool[half:]
    plans = (("calibrated", det, False), ("without_dilution", off, False),
             ("after_held_out_patients", det, True))  # fmt: skip
    for label, d, warm in plans:
        flags = []
        for i in range(runs):
            mon = Monitor(d, shape=list(x.shape[1:]), scale=bounds[1] - bounds[0])
            j = held[i % len(held)]
            if warm:  # benign traffic first: every other held-out patient once
                rows = x[held[held != j]]
                for r, lab in zip(rows, model.predict(rows), strict=True):
                    mon.inspect("k", r[None], np.array([lab]))
            flags.append(attack(mon, "k", model, x[j], int(y[j]), bounds, SIGMA, BUDGET, seed=i,
                                axes=axes))  # fmt: skip
        out[label] = flags
        print(f"projection-aware {label}: {flags}", flush=True)
    # benign: the held-out rows once each, then 10,000 drawn with replacement, without and
    # with N(0, 0.01) (each patient ~70 times: resends that are balls on and off the axes)
    rng = np.random.default_rng(SEED + 3)
    hx = x[held].astype(np.float32)
    draws = hx[rng.integers(0, len(hx), N)]
    noisy = np.clip(draws + rng.normal(0, 0.01, draws.shape), *bounds).astype(np.float32)
    out["benign"] = {}
    for name, xs in (("distinct", hx), ("replacement", draws), ("noise", noisy)):
        mon = Monitor(det, shape=list(x.shape[1:]), scale=bounds[1] - bounds[0])
        labels = model.predict(xs)
        counts: dict[str, int] = {"any": 0}
        for i in range(len(xs)):
            found = mon.inspect("k", xs[i : i + 1], labels[i : i + 1])
            counts["any"] += bool(found)
            for kind in found:
                counts[kind] = counts.get(kind, 0) + 1
        out["benign"][name] = {"queries": len(xs), **counts,
                               "per_1000": round(1000 * counts["any"] / len(xs), 1)}  # fmt: skip
    print(f"projection-aware benign: {json.dumps(out['benign'])}", flush=True)
    return out


def cost(rounds: int = 5, n: int = 1000) -> dict[str, Any]:
    """Detector CPU per query (``Monitor.submit``, batches of 8) at a full history of
    10,000 digits and shifted digits, with the dilution test on and off (ABAB rounds,
    medians): the similarity detector must then scan its whole history."""
    k = kinds({"digits+shifts"})["digits+shifts"]
    det, _ = _calibrated(k)
    off = det.model_copy(deep=True)
    off.dilution.enabled = False
    xs = np.asarray(k.pool[: N + rounds * n], dtype=np.float32)  # new queries each round
    labels = k.labels(xs)
    mons = {}
    for label, d in (("on", det), ("off", off)):
        mons[label] = k.monitor(d)
        for i in range(0, N, 8):
            mons[label].submit("k", xs[i : i + 8], labels[i : i + 8])
    times: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        for label in ("on", "off") if r % 2 == 0 else ("off", "on"):
            mon = mons[label]
            t0 = time.process_time()
            for i in range(N + r * n, N + (r + 1) * n):  # one query a request
                mon.submit("k", xs[i : i + 1], labels[i : i + 1])
            times[label].append((time.process_time() - t0) / n * 1e6)
            mons[label] = mon
    out = {k_: round(float(np.median(v)), 1) for k_, v in times.items()}
    out["rounds_us"] = {k_: [round(t, 1) for t in v] for k_, v in times.items()}
    print(f"cost per query (us, CPU): {json.dumps(out)}", flush=True)
    return out


def residual_cost(rounds: int = 6, n: int = 1000) -> dict[str, Any]:
    """CPU per query of the residual test (breast cancer, 4 principal axes of one half,
    radius 0.04) on and off: 10,000 noisy resends (N(0, 0.02)) of the other half first,
    then ABAB rounds of ``n`` more, one query a request. A worst case: every query has
    20+ residual neighbours, so each gets the exact pass over both histories."""
    from gateway_detection_modalities import tabular

    x, _, _ = tabular()
    idx = np.random.default_rng(SEED).permutation(len(x))
    fit, held = x[idx[:284]], x[idx[284:]]
    mean = fit.mean(axis=0)
    axes = np.linalg.svd(fit - mean, full_matrices=False)[2][:4]
    proj = {"mean": mean.tolist(), "components": axes.tolist()}
    base = {"blacklight": {"enabled": False}, "prada": {"enabled": False},
            "similarity": {"radius": 0.07, "projection": proj}}  # fmt: skip
    dets = {"on": {**base, "dilution": {"enabled": True, "ratio": 0.59, "residual": 0.04}},
            "off": {**base, "dilution": {"enabled": True, "ratio": 0.59}}}  # fmt: skip
    rng = np.random.default_rng(0)
    total = N + rounds * n
    xs = held[rng.integers(0, len(held), total)] + rng.normal(0, 0.02, (total, x.shape[1]))
    xs = np.clip(xs, 0, 1).astype(np.float32)
    zero = np.zeros(total, dtype=np.int64)
    mons = {k: Monitor(Detection.model_validate(d), shape=[x.shape[1]]) for k, d in dets.items()}
    for mon in mons.values():
        for i in range(0, N, 8):
            mon.submit("k", xs[i : i + 8], zero[i : i + 8])
    times: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        for label in ("on", "off") if r % 2 == 0 else ("off", "on"):
            t0 = time.process_time()
            for i in range(N + r * n, N + (r + 1) * n):
                mons[label].submit("k", xs[i : i + 1], zero[i : i + 1])
            times[label].append((time.process_time() - t0) / n * 1e6)
    out: dict[str, Any] = {k: round(float(np.median(v)), 1) for k, v in times.items()}
    out["bytes_per_key"] = {k: m.nbytes("k") for k, m in mons.items()}
    print(f"residual cost per query (us, CPU): {json.dumps(out)}", flush=True)
    return out


def _rate(flags: list[str | None] | None) -> str:
    if flags is None:
        return "-"
    hit = [int(f.split()[0]) for f in flags if f is not None]
    span = f" at {min(hit)}-{max(hit)}" if hit else ""
    return f"{len(hit)}/{len(flags)}{span}"


def table(results: dict[str, Any]) -> None:
    """The markdown rows of ``docs/benchmarks/gateway.md``."""
    print("\n| input | dilution ratio | " + " | ".join(PLANS) + " | benign per 1,000 |")
    print("|---|---|" + "---|" * (len(PLANS) + 1))
    for name, r in results.items():
        if name == "projection-aware":
            continue
        d = r["dilution"]
        ratio = f"{d['ratio']:g}" if d["enabled"] else "off"
        cells = []
        for plan in PLANS:
            now = _rate(r["attacks"][plan])
            old = r["attacks_without_dilution"] or {}
            cells.append(f"{now} (was {_rate(old[plan])})" if plan in old else now)
        b = r.get("benign")
        ben = " / ".join(f"{b[s]['any']['per_1000']:g}" for s in b) if b else "-"
        print(f"| {name} | {ratio} | {' | '.join(cells)} | {ben} |")
    p = results.get("projection-aware")
    if p and "calibrated" in p:
        ben = " / ".join(f"{b['per_1000']:g}" for b in p["benign"].values())
        print(f"\nprojection-aware ({p['axes']} axes): {_rate(p['calibrated'])}, after the "
              f"held-out patients {_rate(p['after_held_out_patients'])} (without dilution "
              f"{_rate(p['without_dilution'])}); benign per 1,000 {ben}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated kinds (digits+shifts,images,tabular,audio,"
                    "text,projection)")  # fmt: skip
    ap.add_argument("--no-benign", action="store_true", help="skip the long benign streams")
    ap.add_argument("--plans", help="comma-separated attack plans to run (default: all)")
    ap.add_argument("--runs", type=int, help="runs per attack plan (default 5)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cost", action="store_true", help="only CPU per query, tests on and off")
    args = ap.parse_args()
    if args.cost:
        result = {"dilution": cost(), "residual": residual_cost()}
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
        return
    only = set(args.only.split(",")) if args.only else None
    chosen = PLANS if args.plans is None else [p for p in args.plans.split(",") if p]
    for name in list(PLANS):  # slow inputs (audio): fewer plans and runs
        if name not in chosen:
            del PLANS[name]
        elif args.runs:
            PLANS[name] = (*PLANS[name][:2], args.runs)
    results: dict[str, Any] = {}
    for name, kind in kinds(only).items():
        results[name] = run_kind(name, kind, not args.no_benign)
        if args.out:  # after each kind: a long run killed late keeps what it measured
            args.out.write_text(json.dumps(results, indent=1))
    if only is None or "projection" in only:
        results["projection-aware"] = projection_aware(20)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    table(results)


if __name__ == "__main__":
    main()
