"""Adaptive attackers against the still-ball rule (``serve/stationary.py``), on real speech.

The rule drops a similarity or dilution alert when the query's ball of neighbours has
not moved in time (one clip resent with fresh noise). An attacker who knows it tries to
look still. Each plan runs after 2,000 benign queries of the key (the long benchmark's
real-speech clips, ``gateway_detection_long.attack_benign``), 5 runs on the held-out
clips, a budget of 300 attack queries, at the detection settings ``gateway calibrate``
picks (clips drawn as the stream is, ``gateway_detection_long``):

* **slow**: the long benchmark's noisy random search with steps ten times smaller
  (blocks set to +-0.01 of the range instead of 0.1; sigma 0.01 and 0.05): a drift
  hidden under the noise;
* **averaging**: each candidate step sent 25 times with fresh noise (sigma 0.05) and kept
  when the mean true-class score drops (the noise-averaging estimate of NES, Ilyas et
  al., arXiv:1804.08598): 25-query still balls, joined by small steps;
* **hiss cover**: a search from a pause with the benign clients' noise (sigma 0.01, steps
  0.01), every query followed by a pause resent with noise (the still hiss it hides in);
* **pair**: two searches (sigma 0.05) on different clips, interleaved query by query.

Reported: the attack's own query at which the key is first flagged (None: not within
300) and which detector; for the hiss cover also alerts on the cover queries; ``off``:
the same plans with ``similarity.stationary: false``, calibrated so (the rule-less
baseline).

Run (about 10 minutes on the loaded 2-core box)::

    OMP_NUM_THREADS=1 timeout 1800 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_still.py --out still.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_long as long  # noqa: E402
from gateway_detection_modalities import _block  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402

RUNS = 5
GAINED: list[tuple[float, float]] = []  # walk(): true-class probability before, after


def walk(kind: long.Kind, x0: np.ndarray, y0: int, sigma: float, step: float, seed: int,
         copies: int = 1, budget: int = long.BUDGET) -> np.ndarray:  # fmt: skip
    """A noisy random search's queries: a candidate is the kept perturbation plus one
    block set to +-``step`` of the range, sent ``copies`` times with fresh N(0, ``sigma``
    of the range) noise, and kept when the mean true-class probability drops. What it
    got (the true class's probability at ``x0`` and at the kept point, without noise)
    goes to :data:`GAINED`."""
    lo, hi = kind.bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    delta, best, sent = np.zeros_like(x0), np.inf, []
    while len(sent) < budget:
        cand = delta.copy()
        cand[_block(rng, x0.shape)] = rng.choice([-step, step]) * span
        qs = np.clip(x0 + cand + rng.normal(0, sigma * span, (copies, *x0.shape)), lo, hi)
        qs = qs.astype(np.float32)[: budget - len(sent)]
        sent += list(qs)
        score = float(kind.model.predict_proba(qs.reshape(len(qs), -1))[:, y0].mean())
        if score < best:
            best, delta = score, cand
    ends = np.clip(np.stack([x0, x0 + delta]), lo, hi).astype(np.float32)
    p0, p1 = kind.model.predict_proba(ends.reshape(2, -1))[:, y0].tolist()
    GAINED.append((round(p0, 3), round(p1, 3)))
    return np.stack(sent)


def _flag(mon: Any, kind: long.Kind, det: Detection, x: np.ndarray) -> list[str]:
    return sorted(mon.inspect("k", kind.feats(det, x[None]), kind.labels(x[None])))


def run_plan(kind: long.Kind, det: Detection, queries: np.ndarray,
             cover: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """First flag of ``queries`` after ``WARM`` benign queries; ``cover``: one cover query
    after each attack query (alerts on them counted apart)."""
    mon = kind.monitor(det)
    bf, bl = long.attack_benign(kind, det)
    for j in range(long.WARM):
        mon.inspect("k", bf[j : j + 1], bl[j : j + 1])
    cover_alerts = 0
    for i, q in enumerate(queries):
        found = _flag(mon, kind, det, q)
        if found:
            return {"first": i + 1, "by": found, "cover_alerts": cover_alerts}
        if cover is not None:
            cover_alerts += bool(_flag(mon, kind, det, cover[i]))
    return {"first": None, "by": [], "cover_alerts": cover_alerts}


def plans(kind: long.Kind, run: int) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Each plan's attack queries (and cover queries) for held-out clip ``run``."""
    x0, y0 = kind.seeds[run]
    x1, y1 = kind.seeds[(run + 1) % len(kind.seeds)]
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
        "slow sigma0.01": (walk(kind, x0, y0, 0.01, 0.01, run), None),
        "slow sigma0.05": (walk(kind, x0, y0, 0.05, 0.01, run), None),
        "averaging 25": (walk(kind, x0, y0, 0.05, 0.1, run, copies=25), None),
    }
    a, b = walk(kind, x0, y0, 0.05, 0.1, run), walk(kind, x1, y1, 0.05, 0.1, run + 10)
    pair = np.empty((2 * long.BUDGET, *x0.shape), dtype=np.float32)
    pair[0::2], pair[1::2] = a, b
    out["pair"] = (pair[: long.BUDGET], None)
    # a pause of the speech data: the quietest whole-second window
    data = kind.data
    pause = data[int(np.argmin(np.abs(data).reshape(len(data), -1).max(axis=1)))]
    rng = np.random.default_rng(run + 20)
    label = int(kind.labels(pause[None])[0])
    attack = walk(kind, pause, label, 0.01, 0.01, run)
    cover = np.clip(pause + rng.normal(0, 0.02, (long.BUDGET, *pause.shape)), -1, 1)
    out["hiss cover"] = (attack, cover.astype(np.float32))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--configs", default="rule,off",
                    help="rule: similarity.stationary (the default on audio); off: without")  # fmt: skip
    ap.add_argument("--runs", type=int, default=RUNS)
    args = ap.parse_args()
    kind = long.kinds({"audio"})["audio"]
    configs: dict[str, Detection] = {}
    results: dict[str, Any] = {}
    for label in args.configs.split(","):
        # each calibrated as a user would: without the rule calibrate picks another radius
        stationary = None if label == "rule" else False
        configs[label], results[f"calibration {label}"] = long._calibrated(kind, stationary)
    for run in range(args.runs):
        GAINED.clear()
        made = plans(kind, run)
        gained = dict(zip(made, GAINED[:4] + GAINED[5:], strict=True))  # pair: its first walk
        for name, (queries, cover) in made.items():
            for label, d in configs.items():
                r = run_plan(kind, d, queries, cover) | {"true_class_p": gained[name]}
                results.setdefault(label, {}).setdefault(name, []).append(r)
                print(f"{label} {name} run {run}: {json.dumps(r)}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    for label in configs:
        for name, rows in results[label].items():
            print(f"| {label} | {name} | {[r['first'] for r in rows]} | "
                  f"{sorted({k for r in rows for k in r['by']})} |")  # fmt: skip


if __name__ == "__main__":
    main()
