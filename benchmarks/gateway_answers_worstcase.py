"""The answers rule's CPU a candidate on the shapes an attacker picks (issue 19, 24f).

:func:`mlwarden.serve.answers.steady` judges every query whose alert stands after the
still-ball rule (tables, ``answers.spread`` set, as ``gateway calibrate`` writes it). Its
cost a candidate is one pass over the history and the single linkage of the query's
cloud, which the client shapes. One key's :class:`~mlwarden.serve.monitor.Similarity`
history (30 values, radius 0.05) and :class:`~mlwarden.serve.answers.Answers` (every
row the same class and log-odds: the answers never make a query stand), first filled
with ``--history`` distinct rows far from the attack, then fed the shape's rows; the
last ``--n`` are timed (thread CPU a candidate, ``steady`` called on each batch). Shapes:

- ``drift``: a search drifting from one row (noise 0.002, a step of 0.002 on 5% of the
  values a query: i23b's finding, 6.7-8.6 ms a query in session 10 before 23h);
- ``chain``: 1,020 rows on a sphere around a centre, each linked only to the next (a
  chain as deep as it is long, all within the radius of the centre), a row bridging it to
  the centre, then queries at the centre (noise 0.001): every cloud holds the chain
  (~15 ms a query after 23h);
- ``halves``: two tight balls a link apart, the queries at the edge of the first: the
  linkage's second level measures half the ball against the other half.

``--baseline DIR``: ``DIR/src/mlwarden/serve/answers.py`` (an older tree's) runs beside
on every call, order alternated, its verdicts compared (the run stops on a difference),
its CPU reported as ``base_us``.

Run::

    OMP_NUM_THREADS=1 timeout 900 nice -n 10 env PYTHONPATH=src .venv/bin/python \\
        benchmarks/gateway_answers_worstcase.py --baseline /tmp/base
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
from gateway_detector_worstcase import load_baseline  # noqa: E402
from mlwarden.serve import answers  # noqa: E402
from mlwarden.serve.config import Similarity as SimilarityConfig  # noqa: E402
from mlwarden.serve.dilution import Dilution  # noqa: E402
from mlwarden.serve.monitor import Similarity  # noqa: E402
from mlwarden.serve.stationary import TIGHT  # noqa: E402

DIMS, RADIUS = 30, 0.05


def shape(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """The attack's rows (module docstring); the last ``n`` are the timed queries."""
    base, link = rng.random(DIMS), TIGHT * RADIUS * np.sqrt(DIMS)
    if kind == "drift":
        at, out = base.copy(), []
        for _ in range(1600 + n):
            at = at + (rng.random(DIMS) < 0.05) * rng.choice([-0.002, 0.002], DIMS)
            out.append(at + rng.normal(0, 0.002, DIMS))
        return np.asarray(out, dtype=np.float32)
    if kind == "halves":
        far = np.zeros(DIMS)
        far[0] = 0.9 * link
        near = base + rng.normal(0, 0.001, (600, DIMS))
        other = base + far + rng.normal(0, 0.001, (600, DIMS))
        edge = base - far / 3 + rng.normal(0, 0.001, (n, DIMS))
        return np.asarray([*near, *other, *edge], dtype=np.float32)
    u, ring = rng.normal(size=DIMS), []
    for _ in range(1020):
        u = u / np.linalg.norm(u)
        ring.append(base + 1.5 * link * u)
        step = rng.normal(size=DIMS)
        step -= step @ u * u
        u = u + 0.6 * step / np.linalg.norm(step)
    bridge = base + 0.5 * (ring[-1] - base)  # the newest end: the oldest leave the CAP first
    centre = base + rng.normal(0, 0.001, (n, DIMS))
    return np.asarray([*ring, bridge, *centre], dtype=np.float32)


def measure(kind: str, args: argparse.Namespace, base: Any | None) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    attack = shape(kind, args.n, rng)
    fill = rng.random((args.history, DIMS)).astype(np.float32) + 5.0  # far from the attack
    xs = np.concatenate([fill, attack])
    hist = args.history + len(attack)
    sim = Similarity(SimilarityConfig(radius=RADIUS, history=hist, window=1000), DIMS)
    ans, mods = answers.Answers(hist), [answers] + ([base] if base is not None else [])
    cpu, calls, quiet = [0.0] * len(mods), 0, 0
    for i in range(0, len(xs), args.batch):
        vs = xs[i : i + args.batch]
        before = Dilution.snapshot(sim, len(vs))
        old = ans.take(before.ids)
        sim.observe_many(vs)
        ans.write(before.first, np.ones(len(vs), dtype=int), np.ones(len(vs), np.float32), len(vs))
        if i < len(xs) - args.n:
            continue
        cand, got = list(range(len(vs))), []
        order = range(len(mods)) if calls % 2 == 0 else reversed(range(len(mods)))
        for m in order:
            t0 = time.thread_time()
            got.append(mods[m].steady(sim, vs, cand, before, ans, old, 1.0))
            cpu[m] += time.thread_time() - t0
        if any(g != got[0] for g in got):
            raise SystemExit(f"{kind}: the baseline's verdicts differ at query {i}")
        calls, quiet = calls + len(vs), quiet + len(got[0])
    row = {"shape": kind, "history": args.history, "batch": args.batch, "candidates": calls,
           "quiet": quiet, "us": round(cpu[0] / calls * 1e6, 1)}  # fmt: skip
    if base is not None:
        row["base_us"] = round(cpu[1] / calls * 1e6, 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="drift,chain,halves")
    p.add_argument("--history", type=int, default=1000, help="distinct rows before the attack")
    p.add_argument("--n", type=int, default=64, help="queries timed")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    base = load_baseline(args.baseline, "answers") if args.baseline else None
    rows = []
    for kind in args.only.split(","):
        rows.append(measure(kind, args, base))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
