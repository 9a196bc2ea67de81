"""Detector CPU a query, old tree against new, alternated in one run (issue 19, session 11).

The served gateway's load (``benchmarks/gateway_load.py``) sends each of 8 keys distinct
inputs, one a request, analysed 8 at a time (``Monitor.submit``); cross-key detection
scans one window of all keys' queries, so its cost is a gateway's, not a key's. Here
two worker processes, one per source tree (``OLD`` and ``NEW``: ``git archive`` exports
with a ``.venv``, or worktrees), each build a ``Monitor`` at the default detection
config (input ``[1, 8, 8]``, as the load benchmark declares) and are fed the same
queries, 8 keys in turn, in chunks of ``--size``: old and new alternate chunk by chunk
(ABBA), so both see the same machine load. Reported: each chunk's thread CPU a query
(``time.thread_time`` around every call) and the share of ``CrossKey.observe`` in it,
medians over chunks (the first chunk left out: numba's kernels load meanwhile), and the
median of the chunk pairs' new / old ratios. The alert counts of both are printed (the
trees may differ in rules; equal counts are expected where only costs changed).

Inputs (``--inputs``): ``load``, the load benchmark's (every digit and its one-pixel
shifts, shuffled, then mixtures of two: many cross-key neighbours), or ``noisy``,
digits with N(0, 0.03) (~40% of queries have a neighbour in the window), or
``resend``, 10 digits re-sent with N(0, 0.01) by every key (a stream shaped for cost:
every query has a full ball in the kept ring and is judged; the still-ball rules excuse
it). ``--mode``:
``submit`` (batch 8, the gateway's default) or ``inspect`` (one query a call, as
``action: block``). ``--warm N``: each key first sends N distinct inputs, 64 a call,
untimed (10000: full histories).

Run (about 2 minutes on the loaded 2-core box)::

    git archive 91314ac | tar -x -C /tmp/old && ln -s $PWD/.venv /tmp/old/.venv
    nice -n 10 .venv/bin/python benchmarks/gateway_detector_oldnew.py /tmp/old . --chunks 13 --size 500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

KEYS = 8


def inputs(kind: str, n: int) -> np.ndarray:
    """``n`` inputs (N, 1, 8, 8) of kind ``load``, ``noisy`` or ``resend`` (module docstring)."""
    from sklearn.datasets import load_digits

    pool = (load_digits().data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    if kind in ("noisy", "resend"):
        rng = np.random.default_rng(0)
        picks = pool[rng.integers(len(pool) if kind == "noisy" else 10, size=n)]
        sigma = 0.03 if kind == "noisy" else 0.01
        return np.clip(picks + rng.normal(0, sigma, (n, 1, 8, 8)), 0, 1).astype(np.float32)
    shifts = [pool] + [np.roll(pool, s, axis=a) for a in (2, 3) for s in (-1, 1)]
    xs = np.concatenate(shifts)[np.random.default_rng(0).permutation(5 * len(pool))]
    rng = np.random.default_rng(1)  # gateway_load._load_inputs: mixtures of two
    extra = max(0, n - len(xs))
    a, b = rng.integers(0, len(xs), (2, extra))
    w = rng.uniform(0.3, 0.7, (extra, 1, 1, 1)).astype(np.float32)
    return np.concatenate([xs, w * xs[a] + (1 - w) * xs[b]])[:n].astype(np.float32)


def worker(args: argparse.Namespace) -> None:
    """One tree's monitor: reads a chunk size a line, answers its CPU figures as JSON."""
    import mlwarden.serve.crosskey as crosskey
    from mlwarden.serve.config import Detection
    from mlwarden.serve.monitor import Monitor, _kernels

    _kernels(wait=True)
    mon = Monitor(Detection(), shape=[1, 8, 8])
    keys = [f"load{i}" for i in range(KEYS)]
    xs = inputs(args.inputs, args.warm * KEYS + args.chunks * args.size)
    spent = [0.0]
    observe = crosskey.CrossKey.observe

    def timed(self: Any, *a: Any, **k: Any) -> Any:
        t0 = time.thread_time()
        out = observe(self, *a, **k)
        spent[0] += time.thread_time() - t0
        return out

    crosskey.CrossKey.observe = timed  # type: ignore[method-assign]
    for i in range(KEYS):
        part = xs[i * args.warm : (i + 1) * args.warm]
        for s in range(0, len(part), 64):
            mon.inspect(keys[i], part[s : s + 64], np.zeros(len(part[s : s + 64]), int))
    pos, alerts = args.warm * KEYS, dict[str, int]()
    call = mon.submit if args.mode == "submit" else mon.inspect
    print("ready", flush=True)
    for line in sys.stdin:
        n, spent[0] = int(line), 0.0
        t0 = time.thread_time()
        for r in range(n):
            for kind, hits in call(keys[r % KEYS], xs[pos : pos + 1], np.array([0])).items():
                alerts[kind] = alerts.get(kind, 0) + len(hits)
            pos += 1
        cpu = time.thread_time() - t0
        print(json.dumps([cpu / n * 1e6, spent[0] / n * 1e6, alerts]), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trees", nargs="*", help="OLD NEW: source trees (each with src/)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--warm", type=int, default=0, help="distinct inputs per key first")
    p.add_argument("--chunks", type=int, default=13)
    p.add_argument("--size", type=int, default=500, help="queries a chunk")
    p.add_argument("--mode", choices=("submit", "inspect"), default="submit")
    p.add_argument("--inputs", choices=("load", "noisy", "resend"), default="load")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    flags = [a for a in sys.argv[1:] if a not in args.trees]
    procs = {}
    for name, tree in zip(("old", "new"), args.trees, strict=True):
        env = dict(os.environ, PYTHONPATH=os.path.join(os.path.abspath(tree), "src"),
                   OMP_NUM_THREADS="1")  # fmt: skip
        procs[name] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", *flags], cwd=tree, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    for proc in procs.values():
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    res: dict[str, list[Any]] = {name: [] for name in procs}
    for c in range(args.chunks):
        for name in ("old", "new") if c % 2 == 0 else ("new", "old"):
            proc = procs[name]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{args.size}\n")
            proc.stdin.flush()
            res[name].append(json.loads(proc.stdout.readline()))
    for name, proc in procs.items():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
        cpu, ck = [r[0] for r in res[name][1:]], [r[1] for r in res[name][1:]]
        print(f"{name}: {np.median(cpu):.1f} us a query (chunks "
              f"{', '.join(f'{t:.0f}' for t in cpu)}), crosskey {np.median(ck):.1f}; "
              f"alerts {res[name][-1][2]}")  # fmt: skip
    ratio = [n[0] / o[0] for n, o in zip(res["new"][1:], res["old"][1:], strict=True)]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"new / old a chunk: median {np.median(ratio):.3f} "
          f"(quartiles {np.percentile(ratio, 25):.3f}-{np.percentile(ratio, 75):.3f}); load {load}")  # fmt: skip


if __name__ == "__main__":
    main()
