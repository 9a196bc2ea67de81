"""PRADA's CPU per query with and without its record's outliers left out of the test
(``detection.prada.outliers``: 3, Juuti et al.'s own code, against 0, the rule until
session 15; issue 19, i28a).

Two :class:`~mlwarden.serve.monitor.Prada` (``references: all``, history 5,000, the
compiled kernels as served) are filled with the same 5,000 distinct scikit-learn digits
and digits near them (each a digit with noise 0.1, so the record is full and its W
varies), then get the same ``--n`` more queries, one at a time, in alternated rounds (ABAB,
one process, one machine load): ``time.thread_time`` per query, medians over rounds.

Run: ``OMP_NUM_THREADS=1 nice -n 10 env PYTHONPATH=src .venv/bin/python
benchmarks/gateway_prada_outliers_cost.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mlwarden.core.data import load_dataset
from mlwarden.serve import monitor
from mlwarden.serve.config import Prada as PradaConfig


def _queries(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("digits")
    x = np.asarray(ds.x, dtype=np.float32).reshape(len(ds.x), -1)
    pick = rng.integers(0, len(x), n)
    noisy = np.clip(x[pick] + rng.normal(0, 0.1, (n, x.shape[1])), 0, 1)
    return noisy.astype(np.float32), np.asarray(ds.y)[pick]


def measure(n: int, rounds: int, seed: int) -> dict[str, object]:
    """Median us a query with outliers left out (3) and kept (0), and the W each gave."""
    monitor._kernels(wait=True)
    rng = np.random.default_rng(seed)
    warm = 5000
    xs, labels = _queries(warm + n * rounds, rng)
    paths = {k: monitor.Prada(PradaConfig(outliers=k), 0.05) for k in (3.0, 0.0)}
    for p in paths.values():
        for i in range(warm):
            p.flags(xs[i], int(labels[i]))
    times: dict[float, list[float]] = {k: [] for k in paths}
    for r in range(rounds):
        part = range(warm + r * n, warm + (r + 1) * n)
        for k in paths if r % 2 == 0 else reversed(list(paths)):
            p = paths[k]
            t0 = time.thread_time()
            for i in part:
                p.flags(xs[i], int(labels[i]))
            times[k].append((time.thread_time() - t0) / n * 1e6)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"outliers_3_us": round(med[3.0], 2), "outliers_0_us": round(med[0.0], 2),
            "delta_us": round(med[3.0] - med[0.0], 2), "w_3": paths[3.0].last_w,
            "w_0": paths[0.0].last_w}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="queries a round")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(measure(args.n, args.rounds, args.seed)), flush=True)


if __name__ == "__main__":
    main()
