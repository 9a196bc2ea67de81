"""PRADA's CPU per query at a full history: the compiled nearest-reference search
(``serve/kernels.py:prada_candidates``) against the numpy path (issue 19, i20e).

One :class:`~mlwarden.serve.monitor.Prada` per path (``references: all``, history 5,000)
is filled with 5,000 distinct queries, then both get the same ``--n`` more, one at a
time, in alternated rounds (ABAB, one process, one machine load); every recorded
distance and W must agree (the run stops otherwise). Process CPU time, medians over
rounds. Inputs: uniform rows, or clustered rows with near copies (``--data``).

Run: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/gateway_prada_cost.py``
(about a minute).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mlwarden.serve import monitor
from mlwarden.serve.config import Prada as PradaConfig


def _rows(data: str, n: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    if data == "uniform":
        return rng.random((n, dims), dtype=np.float32)
    centres = rng.random((50, dims)).astype(np.float32)
    rows = centres[rng.integers(0, 50, n)] + rng.normal(0, 0.02, (n, dims))
    return rows.astype(np.float32)


def measure(classes: int, dims: int, data: str, n: int, rounds: int) -> dict[str, object]:
    """Median us a query of each path, for one setting."""
    kernels = monitor._kernels(wait=True)
    if kernels is None:
        raise SystemExit("numba is not installed: only the numpy path exists here")
    rng = np.random.default_rng(classes * 1000 + dims)
    warm = 5000
    xs = _rows(data, warm + n * rounds, dims, rng)
    labels = rng.integers(0, classes, len(xs))
    cfg = PradaConfig()
    paths = {"numpy": monitor.Prada(cfg, 0.01), "kernel": monitor.Prada(cfg, 0.01)}
    for name, p in paths.items():
        monitor._COMPILED[:] = [None if name == "numpy" else kernels]
        for i in range(warm):
            p.flags(xs[i], int(labels[i]))
    times: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(rounds):
        part = range(warm + r * n, warm + (r + 1) * n)
        for name in paths if r % 2 == 0 else reversed(paths):
            monitor._COMPILED[:] = [None if name == "numpy" else kernels]
            p = paths[name]
            t0 = time.process_time()
            for i in part:
                p.flags(xs[i], int(labels[i]))
            times[name].append((time.process_time() - t0) / n * 1e6)
    monitor._COMPILED[:] = [kernels]
    a, b = paths["numpy"], paths["kernel"]
    if not (np.array_equal(a._dists, b._dists) and a.last_w == b.last_w):
        raise SystemExit(f"paths disagree at classes {classes}, dims {dims}")
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"classes": classes, "dims": dims, "data": data,
            "numpy_us": round(med["numpy"], 1), "kernel_us": round(med["kernel"], 1),
            "ratio": round(med["kernel"] / med["numpy"], 2), "identical": True}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="queries a round")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--data", default="uniform,clusters")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for data in args.data.split(","):
        for classes, dims in ((10, 64), (2, 64), (10, 128)):
            rows.append(measure(classes, dims, data, args.n, args.rounds))
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
