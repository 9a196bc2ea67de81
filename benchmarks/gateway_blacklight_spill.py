"""How often Blacklight's spill dict is non-empty, and what that costs (issue 19, i21f).

Blacklight keeps a key's window hashes in buckets of 32 slots; a hash whose bucket is full
goes to a dict, and while that dict is non-empty every batch runs the numpy code instead of
the compiled kernel (:meth:`mlwarden.serve.monitor.Blacklight.observe_many`). For each
input kind of ``benchmarks/gateway_detection_long.py`` (digits with one-pixel shifts,
images 3x32x32, audio) and each config (the default detection config and the calibrated
one, ``--configs``: a cache as ``gateway_monitor_cost.py --configs`` writes), ``--keys``
keys (a random salt each) are fed ``--n`` distinct queries at batch 8, through
:meth:`Blacklight.observe_many` alone; counted: the queries run while the dict was
non-empty (the numpy fallback), the spill events, and the fullest bucket's live hashes
(sampled every 250 queries; 33 spills). Streams built to fill buckets: ``random``
(uniform values: every query 50 new hashes, the most a key can make live), ``resend``
(one input 10,000 times: no new hash) and ``search`` (one value moved a step a query).
``--history``: Blacklight's history instead of the config's.

CPU a query (``--cpu``): a key at full history, batch 8, the compiled path against the
numpy path (as with the spill dict non-empty, or ``MLW_KERNELS=numpy``), rounds
alternated (ABAB), every count and depth compared.

Run::

    OMP_NUM_THREADS=1 timeout 1800 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_blacklight_spill.py --configs /tmp/configs.json --cpu
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
from gateway_detection_long import Kind, _calibrated, kinds  # noqa: E402
from mlwarden.serve import monitor  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402


def blacklight(kind: Kind, det: Detection, first: np.ndarray) -> monitor.Blacklight:
    """A key's Blacklight as the gateway builds it (its silence gate included)."""
    mon = kind.monitor(det)
    mon.submit("k", first[None], np.zeros(1, dtype=np.int64))
    mon.flush("k")
    bl = mon._keys["k"].blacklight
    assert bl is not None
    return bl


def feed(bl: monitor.Blacklight, xs: np.ndarray) -> dict[str, Any]:
    """Queries at batch 8; counts of the fallback, spill events and the fullest bucket."""
    fallback = events = fullest = 0
    for i in range(0, len(xs), 8):
        before = len(bl._spill)
        fallback += len(xs[i : i + 8]) if bl._spill else 0
        bl.observe_many(xs[i : i + 8])
        events += len(bl._spill) > before
        if i % 248 == 0:
            limit = max(bl._next - bl.config.history - bl._base + 1, 1)
            fullest = max(fullest, int((bl._ids >= limit).sum(axis=1).max()))
    return {"fallback": fallback, "events": events, "fullest": fullest}


def streams(kind: Kind, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    pool = np.asarray(kind.pool[:n], dtype=np.float32)
    lo, hi = kind.bounds
    shape = pool.shape[1:]
    rand = rng.uniform(lo, hi, (n, *shape)).astype(np.float32)
    search = np.repeat(pool[:1], n, axis=0)
    flat = search.reshape(n, -1)
    steps = rng.integers(0, flat.shape[1], n)
    for i in range(1, n):
        flat[i] = flat[i - 1]
        flat[i, steps[i]] = np.clip(flat[i, steps[i]] + 0.05 * (hi - lo), lo, hi)
    return {"distinct": pool, "random": rand, "resend": np.repeat(pool[:1], n, axis=0),
            "search": search}  # fmt: skip


def cpu(kind: Kind, det: Detection, xs: np.ndarray, rounds: int, n: int) -> dict[str, Any]:
    """us a query of observe_many at batch 8: compiled vs the forced numpy path (ABAB)."""
    if monitor._kernels(wait=True) is None:
        raise SystemExit("numba kernels did not build")
    kernels = monitor._kernels
    fast, plain = blacklight(kind, det, xs[0]), blacklight(kind, det, xs[0])
    plain._salt = fast._salt
    hist = det.blacklight.history
    for bl in (fast, plain):
        for i in range(1, hist + 1, 8):
            bl.observe_many(xs[i : min(i + 8, hist + 1)])
    times: dict[str, list[float]] = {"compiled": [], "numpy": []}
    for r in range(rounds):
        lo = hist + 1 + r * n
        out = {}
        for label in ("compiled", "numpy") if r % 2 == 0 else ("numpy", "compiled"):
            bl = fast if label == "compiled" else plain
            got: list[Any] = []
            t0 = time.process_time()
            numpy = lambda wait=False: None  # noqa: E731 - the fallback's path
            monitor._kernels = kernels if label == "compiled" else numpy
            for i in range(lo, lo + n, 8):
                got.append(bl.observe_many(xs[i : i + 8]))
            times[label].append((time.process_time() - t0) / n * 1e6)
            monitor._kernels = kernels
            out[label] = got
            if label == "compiled" and bl._spill:
                raise SystemExit("the compiled key spilled: its figure is not the kernel's")
        if out["compiled"] != out["numpy"]:
            raise SystemExit("counts or depths differ")
    return {k: round(float(np.median(v)), 1) for k, v in times.items()} | {
        "rounds": {k: [round(t, 1) for t in v] for k, v in times.items()}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="digits+shifts,images,audio")
    ap.add_argument("--n", type=int, default=10_000, help="queries a key")
    ap.add_argument("--keys", type=int, default=5)
    ap.add_argument("--history", type=int, help="Blacklight's history (default: config's)")
    ap.add_argument("--configs", type=Path, help="cache of the calibrated configs (JSON)")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--streams", default="distinct,random,resend,search")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cache = json.loads(args.configs.read_text()) if args.configs and args.configs.exists() else {}
    result: dict[str, Any] = {}
    for name, kind in kinds(set(args.only.split(","))).items():
        if name not in cache:
            cache[name] = _calibrated(kind)[0].model_dump(mode="json")
        for label, det in (("default", Detection()),
                           ("calibrated", Detection.model_validate(cache[name]))):  # fmt: skip
            if args.history:
                det.blacklight.history = args.history
            row: dict[str, Any] = {}
            rng = np.random.default_rng(0)
            for sname, xs in streams(kind, args.n, rng).items():
                if sname not in args.streams.split(","):
                    continue
                runs = [feed(blacklight(kind, det, xs[0]), xs[1:]) for _ in range(args.keys)]
                row[sname] = {k: [r[k] for r in runs] for k in runs[0]}
            if args.cpu:
                row["cpu_us"] = cpu(kind, det, streams(kind, args.n, rng)["distinct"], 4, 400)
            result[f"{name} {label}"] = row
            print(name, label, json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
