"""Cross-key detection (serve/crosskey.py): one search over 4 keys, and benign keys sharing inputs.

``gateway_detection_outside.py``'s ``keys4`` gives each key a monitor of its own, so no
gateway-wide view can see it. Here every key is a key of *one*
:class:`~mlwarden.serve.monitor.Monitor`, as in the gateway:

* ``keys4``: 4 keys, each warmed with 2,000 distinct benign queries of its own (the long
  benchmark's pool, the 4 keys in turn: the gateway-wide ring holds benign queries of
  all 4), then the outside benchmark's camouflaged search (its ``plan_queries``, the
  same runs and seeds) with its queries round robin over the 4 keys; beside it the
  same search on one warmed key (``camouflage``). Reported: the search's query at the
  first flag of any key (any detector; and by ``crosskey``), how many of the 4 keys
  were flagged within the budget, and what the answers had given before the first
  flag (the outside benchmark's drop / wrong answer).
* ``sybil`` (``--part sybil``): the issue's noisy random search (``gateway_detection_long``'s
  ``search``, ``--sigma``; text: the word search) round robin over ``--sybil-keys`` keys
  (20, 100, 150; fresh accounts of 200 / 50 distinct benign queries each, as
  ``gateway_detection_realworld``'s ``sybilK``) on a busy gateway: ``--every`` (0, 10, 50)
  distinct benign queries of 100 other users before each step. Reported: the search's
  query at the first flag of any of its keys, by which detector, and what it had before.
* ``shared``: ``--keys`` benign keys (20 and 100), ``--n`` queries in all in random key
  order; each key a device of its own (the outside benchmark's re-encoding: camera /
  logger / microphone / keyboard) sending its own 30 inputs (60%; audio: 9 with 100 keys) or one of 10
  inputs every key shares, Zipf(1) popularity (30%), or the most popular one byte for
  byte, as forwarded (10%). Reported: flagged queries per 1,000 by ``crosskey`` and by
  any detector.

Settings: ``gateway calibrate`` on each kind's calibration inputs, crosskey at its
defaults. Run::

    OMP_NUM_THREADS=1 timeout 3000 nice -n 10 .venv/bin/python benchmarks/gateway_crosskey.py \\
        --out crosskey.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_long as long  # noqa: E402
import gateway_detection_outside as outside  # noqa: E402
import gateway_detection_realworld as realworld  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402
from mlwarden.serve.monitor import Monitor  # noqa: E402


def _copy(mon: Monitor) -> Monitor:
    """A deep copy of a warmed monitor, with fresh locks (locks cannot be copied)."""
    memo: dict[int, Any] = {id(mon._guard): threading.Lock()}
    for state in mon._keys.values():
        memo[id(state.lock)] = threading.Lock()
    if mon.crosskey is not None:
        memo[id(mon.crosskey.lock)] = threading.Lock()
    return copy.deepcopy(mon, memo)


def warm(kind: long.Kind, det: Detection, keys: int = 4) -> Monitor:
    """``keys`` keys of one monitor, each after ``long.WARM`` distinct benign queries."""
    mon = kind.monitor(det)
    bf, bl = long.attack_benign(kind, det)
    for j in range(long.WARM):
        for k in range(keys):
            i = k * long.WARM + j
            mon.inspect(f"k{k}", bf[i : i + 1], bl[i : i + 1])
    return mon


def attack(kind: long.Kind, vary: Any, det: Detection, warmed: Monitor, plan: str, run: int,
           budget: int) -> dict[str, Any]:  # fmt: skip
    qs, ys, keys = outside.plan_queries(kind, vary, plan, run, budget)
    x0, y0 = outside._targets(kind, run, 1)[0]
    p0 = np.full(len(qs), float(outside._proba(kind, np.asarray([x0]) if kind.modality != "text"
                                                else [x0], np.array([y0]))[0]))  # fmt: skip
    mon = _copy(warmed)
    feats, labels = kind.feats(det, qs), kind.labels(qs)
    first, first_ck, by, hit = None, None, [], {}
    for i in range(len(feats)):
        found = mon.inspect(f"k{keys[i]}", feats[i : i + 1], labels[i : i + 1])
        if found:
            hit.setdefault(keys[i], i + 1)
            if first is None:
                first, by = i + 1, sorted(found)
        if "crosskey" in found and first_ck is None:
            first_ck = i + 1
    upto = first - 1 if first else len(qs)
    return {"first": first, "by": by, "crosskey": first_ck, "keys_flagged": len(hit),
            "at_flag": outside._achieved(kind, qs, ys, p0, upto)}  # fmt: skip


def sybil(kind: long.Kind, det: Detection, keys: int, every: int, sigma: float, runs: int,
          budget: int) -> list[dict[str, Any]]:  # fmt: skip
    """The noisy search over ``keys`` fresh accounts, ``every`` benign queries of other
    users before each step: each run's first flag and what the answers gave before it."""
    warmed = realworld._sybil_monitor(kind, det, keys)
    out = []
    for run in range(runs):
        x0, y0 = realworld._target(kind, run)
        qs = long.search(kind, x0, y0, sigma, run)[:budget]
        who = [f"s{i % keys}" for i in range(len(qs))]
        first, by = realworld.first_flag(kind, det, realworld._copy(warmed), qs, who, every)
        upto = first - 1 if first else len(qs)
        out.append({"first": first, "by": by,
                    "at_flag": realworld.achieved(kind, x0, y0, qs, upto)})  # fmt: skip
    return out


def shared(kind: long.Kind, vary: Any, det: Detection, keys: int, n: int,
           seed: int) -> dict[str, float]:  # fmt: skip
    """Flagged per 1,000 over ``n`` queries of ``keys`` benign keys sharing 10 inputs."""
    rng = np.random.default_rng(seed)
    data = kind.data
    mine = min(30, (len(data) - 10) // keys)  # audio: 1,000 clips
    idx = rng.choice(len(data), 10 + mine * keys, replace=False)
    common, own = idx[:10], idx[10:].reshape(keys, mine)
    devs = outside._devices(rng, keys)
    p = 1.0 / np.arange(1, 11)
    rows, who = [], rng.integers(keys, size=n)
    for k in who.tolist():
        r = rng.random()
        if r < 0.1:
            rows.append(data[int(common[0])])  # the same bytes, forwarded
            continue
        i = (
            int(common[rng.choice(10, p=p / p.sum())])
            if r < 0.4
            else int(own[k, rng.integers(mine)])
        )
        rows.append(vary(data[i], rng, devs[k], int(rng.integers(24))))
    rows = rows if kind.modality == "text" else np.stack(rows).astype(np.float32)
    mon = kind.monitor(det)
    feats, labels = kind.feats(det, rows), kind.labels(rows)
    counts = {"crosskey": 0, "any": 0}
    for i, k in enumerate(who.tolist()):
        found = mon.inspect(f"user-{k}", feats[i : i + 1], labels[i : i + 1])
        counts["any"] += bool(found)
        counts["crosskey"] += "crosskey" in found
    return {k: round(1000 * v / n, 2) for k, v in counts.items()}


def cost(kind: long.Kind, det: Detection, rounds: int, n: int) -> dict[str, float]:
    """Detector CPU per query with and without crosskey (two monitors fed the same
    distinct benign queries, 8 keys in turn, :meth:`Monitor.submit` at batch 8, rounds
    alternated), and crosskey's own share (the thread CPU time of its calls), in us."""
    on, off = kind.monitor(det), kind.monitor(det)
    off.crosskey = None
    ring = on.crosskey
    assert ring is not None
    spent = [0.0]
    observe = ring.observe

    def timed(key: str, vs: np.ndarray, own: np.ndarray | None = None) -> list[int]:
        t0 = time.thread_time()
        try:
            return observe(key, vs, own)
        finally:
            spent[0] += time.thread_time() - t0

    ring.observe = timed  # type: ignore[method-assign]
    bf, bl = long.attack_benign(kind, det)
    per: dict[str, list[float]] = {"on": [], "off": [], "crosskey": []}
    for r in range(rounds):
        part = slice(r * n, (r + 1) * n)
        xs, ys = bf[part], bl[part]
        for name, mon in (("on", on), ("off", off)) if r % 2 == 0 else (("off", off), ("on", on)):
            before, t0 = spent[0], time.process_time()
            for i in range(len(xs)):
                mon.submit(f"k{i % 8}", xs[i : i + 1], ys[i : i + 1])
            per[name].append(1e6 * (time.process_time() - t0) / len(xs))
            if name == "on":
                per["crosskey"].append(1e6 * (spent[0] - before) / len(xs))
    return {k: round(float(np.median(v)), 1) for k, v in per.items()}


def run_kind(name: str, kind: long.Kind, vary: Any, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    det, summary = long._calibrated(kind)
    row: dict[str, Any] = {"calibration": summary}
    if args.part in ("attacks", "both"):
        warmed = warm(kind, det)
        for plan in ("keys4", "camouflage"):
            row[plan] = []
            for run in range(args.runs):
                row[plan].append(attack(kind, vary, det, warmed, plan, run, args.budget))
                print(f"{name} {plan} run {run}: {json.dumps(row[plan][-1])}", flush=True)
    if args.part == "sybil":
        for k in (int(v) for v in args.sybil_keys.split(",")):
            for every in (int(v) for v in args.every.split(",")):
                res = sybil(kind, det, k, every, args.sigma, args.runs, args.budget)
                row[f"sybil{k}_every{every}"] = res
                print(f"{name} sybil{k} every {every}: {json.dumps(res)}", flush=True)
    if args.part == "cost":
        det = Detection() if args.defaults else det
        row["cost_us"] = cost(kind, det, args.rounds, args.n)
        print(f"{name} cost (us a query): {json.dumps(row['cost_us'])}", flush=True)
    if args.part in ("benign", "both"):
        for keys in (int(k) for k in args.keys.split(",")):
            row[f"shared{keys}"] = [
                shared(kind, vary, det, keys, args.n, s) for s in range(args.seeds)
            ]
            print(f"{name} shared{keys}: {json.dumps(row[f'shared{keys}'])}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def table(results: dict[str, Any]) -> None:
    print("\n| input | keys4: first flag (crosskey), keys flagged, wrong before | one key | "
          "shared inputs: crosskey / any per 1,000 |\n|---|---|---|---|")  # fmt: skip
    for name, row in results.items():
        k4, one = row.get("keys4", []), row.get("camouflage", [])
        cell = " / ".join(f"{r['first']} ({r['crosskey']}) {r['keys_flagged']}/4" for r in k4)
        wrong = sum(r["at_flag"]["wrong"] for r in k4)
        solo = " / ".join(str(r["first"]) for r in one)
        ben = "; ".join(f"{k[6:]} keys: " + ", ".join(f"{r['crosskey']:g} / {r['any']:g}"
                                                     for r in v)
                        for k, v in row.items() if k.startswith("shared"))  # fmt: skip
        print(f"| {name} | {cell}; {wrong}/{len(k4)} wrong | {solo} | {ben} |")
    for name, row in results.items():
        for plan, res in ((k, v) for k, v in row.items() if k.startswith("sybil")):
            hits = sorted(r["first"] for r in res if r["first"])
            span = f"{hits[0]}-{hits[-1]}" if hits else "-"
            by = sorted({b for r in res for b in r["by"]})
            wrong = sum(r["at_flag"]["wrong"] for r in res)
            print(f"| {name} | {plan} | {len(hits)}/{len(res)} at {span} ({', '.join(by)}); "
                  f"{wrong}/{len(res)} wrong before the flag |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated of images, tabular, audio, text "
                    "(cost: also digits+shifts)")  # fmt: skip
    ap.add_argument("--part", choices=("benign", "attacks", "both", "cost", "sybil"),
                    default="both")  # fmt: skip
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--budget", type=int, default=long.BUDGET)
    ap.add_argument("--keys", default="20,100", help="benign keys sharing inputs")
    ap.add_argument("--n", type=int, default=3000, help="benign queries in all")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--sybil-keys", default="20,100,150", help="sybil: keys of the search")
    ap.add_argument("--every", default="0,10,50", help="sybil: other users' queries a step")
    ap.add_argument("--sigma", type=float, default=0.01, help="sybil: the search's noise")
    ap.add_argument("--rounds", type=int, default=6, help="cost: alternated rounds")
    ap.add_argument("--defaults", action="store_true", help="cost: the default detection config")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--secret-seed", type=int, default=0, help="the gateways' sketch secret")
    args = ap.parse_args()
    realworld.fix_secret(args.secret_seed)  # a rerun reproduces a cell
    only = set(args.only.split(",")) if args.only else {"images", "tabular", "audio", "text"}
    results: dict[str, Any] = {}
    found = outside.attack_kinds(only)
    if args.part == "cost" and "digits+shifts" in only:  # what gateway_load.py serves
        found["digits+shifts"] = (long.kinds({"digits+shifts"})["digits+shifts"], None)
    for name, (kind, vary) in found.items():
        results[name] = run_kind(name, kind, vary, args)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    table(results)


if __name__ == "__main__":
    main()
