"""What a restart gives an attacker, and what the key's stored state costs (issue 19, 25g).

A gateway restart (a deploy, a crash) reloads each key's detector state from the audit
database (:meth:`mlwarden.serve.monitor.Monitor.dump` / ``load``, the server's path: a
blob at shutdown and every 1,024 distinct queries). Until session 12 the spread window,
PRADA's reference sets and record, Blacklight's table, the audio tail and the queued
queries started afresh, so a search restarted often enough was never flagged by the
rules that read them. Two searches on 8x8 digits, 5 runs each, restarted every
``--every`` queries (dump, a fresh monitor, load), first flagged query and its kinds:

- ``spread``: the issue's noisy random search (2x2 blocks of +-0.1, a quarter of steps
  kept) at sigma 0.13, too noisy for the similarity radius, which only the spread rule
  (its last 50 queries) flags;
- ``jbda``: Papernot et al.'s Jacobian-style extraction queries (10 held-out seeds, sign
  steps of 0.1), which only PRADA flags.

``--part cost``: the blob of one key after ``--n`` distinct random queries at the default
histories (digits 1x8x8 and images 3x32x32): its size, and the thread CPU of ``dump``
and ``load`` (medians of 5).

Run (old tree vs new: run each with its own ``PYTHONPATH=src``)::

    OMP_NUM_THREADS=1 timeout 1200 nice -n 10 env PYTHONPATH=src .venv/bin/python \\
        benchmarks/gateway_restart_state.py --every 30,40 [--part cost --n 10000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from mlwarden.core.data import load_dataset
from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor, compile_kernels

DET = {"crosskey": {"enabled": False}}  # gateway-wide, stored apart from the key's blob


def _search(x0: np.ndarray, sigma: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    delta, out = np.zeros_like(x0), []
    for _ in range(n):
        cand = delta.copy()
        r, c = rng.integers(0, 7, 2)
        cand[..., r : r + 2, c : c + 2] = rng.choice([-0.1, 0.1])
        out.append(np.clip(x0 + cand + rng.normal(0, sigma, x0.shape), 0, 1))
        if rng.random() < 0.25:
            delta = cand
    return np.asarray(out, dtype=np.float32)


def _jbda(seeds: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pool = list(seeds)
    while len(pool) < n:
        pool += [np.clip(p + 0.1 * np.sign(rng.standard_normal(p.shape)), 0, 1) for p in pool]
    return np.stack(pool[:n]).astype(np.float32)


def first_flag(xs: np.ndarray, labels: np.ndarray, every: int) -> str:
    """The first flagged query (1-based) and its kinds, restarted every ``every`` queries."""
    det = Detection.model_validate(DET)
    mon = Monitor(det, shape=list(xs.shape[1:]))
    for i in range(len(xs)):
        if every and i and i % every == 0:
            blob = mon.dump("k")
            assert blob is not None
            mon = Monitor(det, shape=list(xs.shape[1:]))
            mon.load("k", blob)
        found = mon.inspect("k", xs[i : i + 1], labels[i : i + 1])
        if found:
            return f"{i + 1} {'+'.join(sorted(found))}"
    return "never"


def streams(n: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Five runs of each search, with the labels a digits model gives them."""
    from sklearn.linear_model import LogisticRegression

    ds = load_dataset("digits")
    x = ds.x.astype(np.float32).reshape(-1, 1, 8, 8)
    idx = np.random.default_rng(0).permutation(len(x))
    tr, te = idx[:1347], idx[1347:]
    model = LogisticRegression(max_iter=300).fit(x[tr].reshape(len(tr), -1), ds.y[tr])

    def label(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return q, model.predict(q.reshape(len(q), -1))

    return {
        "spread": [label(_search(x[100 + 37 * s], 0.13, n, s)) for s in range(5)],
        "jbda": [label(_jbda(x[te][10 * s : 10 * s + 10], n, s)) for s in range(5)],
    }


def _median_cpu(fn: Callable[[], object], reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t = time.thread_time()
        fn()
        times.append(time.thread_time() - t)
    return float(np.median(times))


def cost(shape: list[int], n: int) -> str:
    """Blob size, dump and load CPU of one key after ``n`` distinct random queries."""
    rng = np.random.default_rng(0)
    det = Detection.model_validate(DET)
    mon = Monitor(det, shape=shape)
    xs = rng.uniform(0, 1, (n, *shape)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    for a in range(0, n, 8):
        mon.inspect("k", xs[a : a + 8], labels[a : a + 8])
    blob = mon.dump("k")
    assert blob is not None
    dump_s = _median_cpu(lambda: mon.dump("k"))
    load_s = _median_cpu(lambda: Monitor(det, shape=shape).load("k", blob))
    return (f"{'x'.join(map(str, shape))} after {n}: blob {len(blob) / 1e6:.2f} MB, dump "
            f"{dump_s * 1e3:.1f} ms, load {load_s * 1e3:.1f} ms, memory "
            f"{mon.nbytes('k') / 1e6:.1f} MB")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["restarts", "cost"], default="restarts")
    ap.add_argument("--every", default="0,30,40", help="restart every N queries (0: never)")
    ap.add_argument("--n", type=int, default=300, help="queries a run (cost: a key's history)")
    args = ap.parse_args()
    compile_kernels()
    if args.part == "cost":
        for shape in ([1, 8, 8], [3, 32, 32]):
            print(cost(shape, args.n), flush=True)
        return
    runs = streams(args.n)
    for every in (int(v) for v in args.every.split(",")):
        for name, rs in runs.items():
            print(f"{name} every {every}: " + "; ".join(first_flag(q, y, every) for q, y in rs),
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
