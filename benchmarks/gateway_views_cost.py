"""Detector CPU a query where the still-ball rules judge queries: old monitor against new.

Session 14 (issue 27e): a batch's shifted copies and clipped values
(``Monitor._shifted`` / ``Monitor._clipped``) were built twice, once for the spread
rule's still-ball verdicts (``Monitor._narrow``) and once for the similarity alerts'
(``Monitor._moving``), and each position's computed again by each. Distinct benign
queries seldom reach either (no alert to judge); a stream whose queries are judged
does. Streams, each after ``--history`` distinct queries of the kind's pool:

* ``distinct``: the pool's next distinct inputs (the benign cost: nothing to judge);
* ``resend``: 50 of the pool's inputs resent in random order with N(0, 0.02 of the
  range), clipped (the issue's "small noise" client: every query a full ball, judged);
* ``search``: the issue's noisy random search (sigma 0.05), 300 queries a seed, seeds
  in turn (every query an alert to judge).

The kinds (``images``, ``digits+shifts``) and their calibrated detection configs are
``gateway_detection_long``'s; timing and the alerts check are
``gateway_monitor_cost.measure``'s (the two monitors fed the same queries in alternated
rounds, ABAB, one process; every alert of both must agree), both under one sketch
secret (the still-ball rule's vet and, from session 14, the spread rule's drawn
neighbourhood read it). ``--baseline DIR``: the old tree (its
``src/mlwarden/serve/monitor.py``).

Run (about 10 minutes on the loaded 2-core box)::

    git archive e67cd25 | tar -x -C /tmp/base
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/gateway_views_cost.py \\
        --baseline /tmp/base --out views.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_long as long  # noqa: E402
from gateway_monitor_cost import load_baseline, measure  # noqa: E402
from mlwarden.serve import monitor as new_monitor  # noqa: E402

SECRET = b"gateway_views_cost sketch secret"  # both monitors' (Monitor.__init__ reads it)


def stream(kind: long.Kind, name: str, n: int, history: int) -> np.ndarray:
    """``history + 1`` distinct inputs of the pool, then ``n`` queries of stream ``name``."""
    pool = np.asarray(kind.pool, dtype=np.float32)
    lo, hi = kind.bounds
    head, rest = pool[: history + 1], pool[history + 1 :]
    rng = np.random.default_rng(7)
    if name == "distinct":
        tail = rest[:n]
    elif name == "resend":
        picks = rest[rng.permutation(len(rest))[:50]][rng.integers(0, 50, n)]
        tail = np.clip(picks + rng.normal(0, 0.02 * (hi - lo), picks.shape), lo, hi)
    else:
        runs, seed = [], 0
        while sum(len(r) for r in runs) < n:
            x0, y0 = kind.seeds[seed % len(kind.seeds)]
            runs.append(long.search(kind, np.asarray(x0, np.float32), int(y0), 0.05, seed))
            seed += 1
        tail = np.concatenate(runs)[:n]
    return np.concatenate([head, np.asarray(tail, dtype=np.float32)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="images,digits+shifts")
    ap.add_argument("--streams", default="distinct,resend,search")
    ap.add_argument("--history", type=int, default=2000, help="distinct queries first")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--n", type=int, default=150, help="queries a round")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--baseline", type=Path, required=True, help="the old tree")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    mods = {"before": load_baseline(args.baseline), "now": new_monitor}
    for mod in mods.values():  # one sketch secret for both (the spread rule draws from it)
        mod.new_secret = lambda: SECRET  # type: ignore[attr-defined]
    results: dict[str, Any] = {}
    for name, kind in long.kinds(set(args.only.split(","))).items():
        det = long._calibrated(kind)[0]
        for s in args.streams.split(","):
            xs = stream(kind, s, args.rounds * args.n, args.history)
            res = measure(name, dataclasses.replace(kind, pool=xs), det, mods, args.history,
                          args.rounds, args.n, args.batch)  # fmt: skip
            results[f"{name} {s}"] = res
            print(f"{name} {s}: {json.dumps(res)}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
