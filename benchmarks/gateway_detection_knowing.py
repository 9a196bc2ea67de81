"""Gateway stream detectors against attackers who know the rules, on every tensor input.

The attacker has read ``docs/`` and ``serve/``: similarity counts neighbours within a
radius, the dilution test compares counts at two radii, and the still-ball rule
(``serve/stationary.py``) forgives a ball of neighbours whose centre does not move
(one input resent with fresh noise). So it tries to look like a resending client. Each
plan runs after 2,000 benign queries of the same key (``gateway_detection_long``'s
pools, models and held-out seed inputs), 5 runs, 300 attack queries (``--budget``), at the settings
``gateway calibrate`` picks on the user's plain sample (``--stationary on``: with
``similarity.stationary`` forced on, the rule for every input). Plans (sigma and steps
are fractions of the input range; a step sets one random block, as Square's search):

* **slow s0.05 / slow s0.1**: steps of 0.01 under fresh N(0, sigma) noise a query,
  the drift hidden under the attacker's own noise; the steps add up to the same Linf
  ball of 0.1 as the other searches (a step that only set a block to +-0.01 could
  never move the model far, which rated the rule against a weak attack);
* **cover 9**: the attacker resends its current point with fresh noise (sigma 0.05) 9
  times between candidate steps of 0.1, so its cloud looks like a still ball that
  jumps now and then;
* **restarts**: slow s0.05 walks restarted from the clean input every 60 queries (the
  drift of each segment is short; the best point over all segments is kept);
* **pair**: two sigma-0.05 searches (steps 0.1) on two inputs, interleaved query by
  query; **pair slow**: the same with steps 0.01.

Attackers who know that an image's own cloud is gathered up to a shift of two pixels
(``stationary.aligned``, session 10): each query they send is re-encoded as the
clients benchmark's ``burst20`` re-encodes (brightness x U(0.95, 1.05), a one-pixel
shift half the time, 8 bits), so the search looks like a burst of one input:

* **shifted s0**: a noiseless block search (steps 0.1, Square's), each query re-encoded;
* **shifted s0.05 / shifted slow**: the sigma-0.05 search with steps 0.1 / 0.01, each
  query re-encoded;
* **burst cover**: the noiseless search resending its current point re-encoded 9 times
  between candidate steps, so 9 in 10 of its queries are a burst's copies;
* **shift grid**: the translations of the input within 2 pixels (25, brightness x
  U(0.95, 1.05), 8 bits), each 4 times in random order, then 200 of the noiseless
  search's re-encoded queries: a search over translations (Engstrom et al.) within the
  identity's reach is excused by design; the search after it is not.

Reported per plan: the attack's own query at which the key is first flagged (None: not
within 300) and by which detectors, and what the attack achieved within its 300
queries, flagged or not: the true-class probability at the clean input and at the
kept point (without noise) and whether a right answer was turned wrong. An evasion of
the detectors that never moves the model is not a win.

``--square``: ART's Square attack (eps 0.3, p_init 0.8, as published for MNIST) on the
held-out benchmark's MNIST CNN, which succeeds before the detectors' 20-query warm-up.
Measured, not changed: at the calibrated radius, with ``similarity.min_neighbours`` and
Blacklight's chain lowered to k, the query at which each Square run would be flagged
against its success query, and the false alarms of the held-out benign clients
(``gateway_detection_clients.py``: photo10, pool50, burst20, zipf, users4) at each k.

Run (about 20 minutes on the loaded 2-core box)::

    OMP_NUM_THREADS=1 timeout 2400 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_knowing.py --out knowing.json
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
from gateway_detection_modalities import _block  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402
from mlwarden.serve.monitor import Monitor  # noqa: E402

RUNS = 5
EPS = 0.1  # the Linf ball of every search here, as the long benchmark's (a fraction of the range)
# name -> (sigma, step, resends of the current point between steps, restart every)
PLANS: dict[str, tuple[float, float, int, int]] = {
    "slow s0.05": (0.05, 0.01, 0, 0),
    "slow s0.1": (0.1, 0.01, 0, 0),
    "cover 9": (0.05, 0.1, 9, 0),
    "restarts": (0.05, 0.01, 0, 60),
}


# name -> the plan of the search whose every query is re-encoded (recode): a burst's look
SHIFTED: dict[str, tuple[float, float, int, int]] = {
    "shifted s0": (0.0, 0.1, 0, 0),
    "shifted s0.05": (0.05, 0.1, 0, 0),
    "shifted slow": (0.05, 0.01, 0, 0),
    "burst cover": (0.0, 0.1, 9, 0),
}
EXTRA = (*SHIFTED, "shift grid")  # plans only for image kinds (a frame of 16 x 16 or more)


def recode(bounds: tuple[float, float]) -> Any:
    """x -> x re-encoded as ``gateway_detection_clients``' burst20 does (brightness x
    U(0.95, 1.05), a one-pixel shift half the time, 8 bits), with the given generator."""
    from gateway_detection_clients import vary_image

    vary = vary_image(bounds)
    return lambda x, rng: vary(x, rng, 1.0)


def walk(kind: long.Kind, x0: np.ndarray, y0: int, plan: tuple[float, float, int, int],
         seed: int, budget: int = long.BUDGET, move: Any = None,
         ) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """One adaptive search's queries and what it achieved (true-class probability at
    ``x0`` and at its best kept point, noise-free; whether that point is misclassified).
    ``move(x, rng)``: applied to every query sent (:func:`recode`), the scores read there."""
    sigma, step, hide, restart = plan
    lo, hi = kind.bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    sent_as = (lambda x: x) if move is None else (lambda x: move(x, rng))  # noqa: E731

    def noisy(x: np.ndarray) -> np.ndarray:
        x = x + rng.normal(0, sigma * span, x.shape) if sigma else x
        return sent_as(np.clip(x, lo, hi).astype(np.float32))

    delta, score = np.zeros_like(x0), np.inf
    best, best_delta = np.inf, delta
    sent: list[np.ndarray] = []
    while len(sent) < budget:
        if restart and len(sent) and len(sent) % restart == 0:
            delta, score = np.zeros_like(x0), np.inf
        sent += [noisy(x0 + delta) for _ in range(min(hide, budget - len(sent) - 1))]
        cand = delta.copy()
        b, sign = _block(rng, x0.shape), rng.choice([-1.0, 1.0])
        # steps under EPS add up (a slow drift still reaches the search's Linf ball);
        # a step of EPS sets the block, as Square's search does
        cand[b] = (
            np.clip(cand[b] + sign * step * span, -EPS * span, EPS * span)
            if step < EPS
            else sign * step * span
        )
        q = noisy(x0 + cand)
        sent.append(q)
        p = float(kind.model.predict_proba(q.reshape(1, -1))[0, y0])
        if p < score:
            score, delta = p, cand
        if p < best:
            best, best_delta = p, cand
    return np.stack(sent[:budget]), _gain(kind, x0, y0, best_delta)


def shift_grid(kind: long.Kind, x0: np.ndarray, y0: int, seed: int,
               budget: int = long.BUDGET) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """The translations of ``x0`` within 2 pixels, each 4 times (brightness, 8 bits) in
    random order, then the noiseless block search, each query re-encoded (:func:`recode`)."""
    lo, hi = kind.bounds
    rng = np.random.default_rng(seed)
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)] * 4
    grid = [np.roll(x0, shifts[i], axis=(-2, -1)) * rng.uniform(0.95, 1.05)
            for i in rng.permutation(len(shifts))]  # fmt: skip
    from gateway_detection_clients import _quant

    grid = [_quant(g, lo, hi, 255).astype(np.float32) for g in grid]
    rest, gain = walk(kind, x0, y0, SHIFTED["shifted s0"], seed, budget - len(grid),
                      recode(kind.bounds))  # fmt: skip
    return np.concatenate([np.stack(grid), rest]), gain


def _gain(kind: long.Kind, x0: np.ndarray, y0: int, delta: np.ndarray) -> dict[str, Any]:
    lo, hi = kind.bounds
    ends = np.clip(np.stack([x0, x0 + delta]), lo, hi).astype(np.float32).reshape(2, -1)
    p = kind.model.predict_proba(ends)[:, y0]
    right = kind.model.predict(ends) == y0  # success: a right answer made wrong
    return {"p0": round(float(p[0]), 3), "p1": round(float(p[1]), 3),
            "success": bool(right[0] and not right[1])}  # fmt: skip


def _warm(kind: long.Kind, det: Detection) -> Monitor:
    """A key after 2,000 benign queries (copied for each plan)."""
    mon = kind.monitor(det)
    bf, bl = long.attack_benign(kind, det)
    bp = kind.answers(det, bf)  # the rows themselves but on text
    for j in range(long.WARM):
        mon.inspect("k", bf[j : j + 1], bl[j : j + 1], long.row(bp, j))
    return mon


def _copy(mon: Monitor) -> Monitor:
    """A deep copy of a warmed monitor; its locks are fresh (locks cannot be copied)."""
    memo: dict[int, Any] = {id(mon._guard): threading.Lock()}
    for state in mon._keys.values():
        memo[id(state.lock)] = threading.Lock()
    if mon.crosskey is not None:  # cross-key detection (session 9) holds a lock too
        memo[id(mon.crosskey.lock)] = threading.Lock()
    return copy.deepcopy(mon, memo)


def first(kind: long.Kind, det: Detection, warm: Monitor, qs: np.ndarray) -> dict[str, Any]:
    mon = _copy(warm)
    feats, labels, probs = kind.feats(det, qs), kind.labels(qs), kind.answers(det, qs)
    for i in range(len(qs)):
        found = mon.inspect("k", feats[i : i + 1], labels[i : i + 1], long.row(probs, i))
        if found:
            return {"first": i + 1, "by": sorted(found)}
    return {"first": None, "by": []}


def run_kind(name: str, kind: long.Kind, stationary: bool | None, runs: int,
             budget: int = long.BUDGET, only: set[str] | None = None) -> dict[str, Any]:  # fmt: skip
    t0 = time.time()
    det, summary = long._calibrated(kind, stationary)
    if stationary:
        det.similarity.stationary = True
    warm = _warm(kind, det)
    row: dict[str, Any] = {"calibration": summary}
    for run in range(runs):
        x0, y0 = kind.seeds[run]
        x1, y1 = kind.seeds[(run + 1) % len(kind.seeds)]
        made = {p: walk(kind, x0, y0, plan, run, budget) for p, plan in PLANS.items()
                if only is None or p in only}  # fmt: skip
        made |= _shifted(kind, x0, y0, run, budget, only)
        for label, step in (("pair", 0.1), ("pair slow", 0.01)):
            if only is not None and label not in only:
                continue
            a, ga = walk(kind, x0, y0, (0.05, step, 0, 0), run, budget // 2)
            b, gb = walk(kind, x1, y1, (0.05, step, 0, 0), run + 10, budget // 2)
            both = np.empty((budget, *x0.shape), dtype=np.float32)
            both[0::2], both[1::2] = a, b
            made[label] = (both, {"a": ga, "b": gb})
        for plan, (qs, gain) in made.items():
            res = first(kind, det, warm, qs) | {"gain": gain}
            row.setdefault(plan, []).append(res)
            print(f"{name} {plan} run {run}: {json.dumps(res)}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def _shifted(kind: long.Kind, x0: np.ndarray, y0: int, run: int, budget: int,
             only: set[str] | None) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:  # fmt: skip
    """The plans of searches that look like bursts (:data:`EXTRA`), for image kinds only."""
    if x0.ndim < 2 or min(x0.shape[-2:]) < 16 or kind.modality != "tensor":
        return {}
    want = [p for p in EXTRA if only is not None and p in only]  # asked for by name only
    made = {p: walk(kind, x0, y0, SHIFTED[p], run, budget, recode(kind.bounds))
            for p in want if p in SHIFTED}  # fmt: skip
    if "shift grid" in want:
        made["shift grid"] = shift_grid(kind, x0, y0, run, budget)
    return made


def _cell(res: list[dict[str, Any]]) -> str:
    firsts = [r["first"] for r in res]
    hit = sorted(f for f in firsts if f is not None)
    text = f"{len(hit)}/{len(res)}" + (f" at {hit[0]}-{hit[-1]}" if hit else "")
    gains = [g for r in res for g in (r["gain"].values() if "a" in r["gain"] else [r["gain"]])]
    drop = [g["p0"] - g["p1"] for g in gains]
    ok = sum(g["success"] for g in gains)
    return f"{text}; p drop {min(drop):.2f}-{max(drop):.2f}, {ok}/{len(gains)} turned wrong"


def table(results: dict[str, Any]) -> None:
    plans = [p for p in (*PLANS, "pair", "pair slow", *EXTRA)
             if any(p in r for r in results.values())]  # fmt: skip
    print(f"\n| input | {' | '.join(plans)} |")
    print("|---|" + "---|" * len(plans))
    for name, row in results.items():
        if name != "square":
            print(f"| {name} | {' | '.join(_cell(row[p]) for p in plans)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated kinds (digits+shifts,images,tabular,audio)")
    ap.add_argument("--stationary", choices=("calibrated", "on"), default="calibrated")
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--budget", type=int, default=long.BUDGET, help="attack queries a run")
    ap.add_argument("--plans", help=f"comma-separated of {[*PLANS, 'pair', 'pair slow', *EXTRA]}"
                    " (the last five on image kinds, only when named)")  # fmt: skip
    ap.add_argument("--square", action="store_true", help="the Square-before-warm-up study only")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results: dict[str, Any] = {}
    if args.square:
        from gateway_square_warmup import study

        results["square"] = study()
    else:
        only = set(args.only.split(",")) if args.only else {"digits+shifts", "images",
                                                               "tabular", "audio"}  # fmt: skip
        on = True if args.stationary == "on" else None
        for name, kind in long.kinds(only).items():
            plans = set(args.plans.split(",")) if args.plans else None
            results[name] = run_kind(name, kind, on, args.runs, args.budget, plans)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    table(results)


if __name__ == "__main__":
    main()
