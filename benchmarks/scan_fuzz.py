"""Differential fuzzing of ``mlwarden scan`` against the real loaders (issue 20), long run.

Seeds written by pickle (protocols 0-5), joblib (raw and every compressor), numpy
(object ``.npy``/``.npz``) and torch (zip protocols 2 and 4, legacy stacked pickles, a
legacy tar checkpoint), each with a harmless canary, are mutated grammar-aware (number
spellings, memo use, GLOBAL/STACK_GLOBAL, stream boundaries, member order/names/links,
header versions, dtype spellings; see ``tests/supplychain/difffuzz.py``). Every mutant is
scanned, then loaded by its real loaders (``pickle.load``, ``joblib.load``,
``numpy.load(allow_pickle=True)``, ``torch.load(weights_only=False)``) in a sandboxed child
process (fresh interpreter, CPU/memory/file-size limits, per-load alarm). Printed per
loader: loads tried, loads that ran the canary, the scan verdicts of those, and
*bypasses* (ran the canary while scanned ``safe``; the target is 0). Exit status 1 when
any bypass is found.

Run::

    nice -n 10 timeout 3000 .venv/bin/python benchmarks/scan_fuzz.py --mutants 100 --seed 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "supplychain"))

from difffuzz import build_seeds, run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=int, default=100, help="mutants per seed file")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the mutators")
    ap.add_argument("--seconds", type=int, default=2, help="time limit of one load")
    args = ap.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlw-fuzz-") as tmp:
        root = Path(tmp)
        seeds = build_seeds(root)
        report = run(
            seeds, mutants_per_seed=args.mutants, seed=args.seed, workdir=root, seconds=args.seconds
        )
    wall = time.perf_counter() - start
    print(f"{len(seeds)} seeds x {args.mutants} mutants = {len(seeds) * args.mutants} mutants")
    print(f"{'loader':8} {'loads':>6} {'ran canary':>10}  verdicts of those that ran")
    for loader in sorted(report.tried):
        verdicts = report.by_loader.get(loader, {})
        text = ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items())) or "-"
        print(f"{loader:8} {report.tried[loader]:6d} {report.fired.get(loader, 0):10d}  {text}")
    print("load outcomes:", ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())))
    print(f"bypasses (ran the canary, scanned safe): {len(report.bypasses)}")
    for name, loader, outcome in report.bypasses:
        print(f"  BYPASS {loader}: {name} ({outcome})")
    print(f"wall time {wall:.0f} s (seed {args.seed})")
    return 1 if report.bypasses else 0


if __name__ == "__main__":
    raise SystemExit(main())
