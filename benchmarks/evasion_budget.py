"""Wall time and robust accuracy of the evasion budgets (fast, standard) on the demo model.

The demo's digits CNN (SmallCNN, 8x8 digits, trained as ``mlwarden demo`` trains it),
saved as TorchScript and attacked through the command line's own code path
(:func:`mlwarden.evasion.evasion_report`) at Linf eps=0.1, on a seeded subset.

    nice -n 10 .venv/bin/python benchmarks/evasion_budget.py fast:500 fast:100 standard:100

Prints one row per run (budget:inputs): wall seconds, CPU seconds of this process (all
threads; on a loaded machine the CPU time is the figure to compare), robust accuracy
with its 95% interval, and each stage's wall seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from mlwarden.core.data import bundled
from mlwarden.core.models import SmallCNN, fit
from mlwarden.evasion import evasion_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", default=["fast:500", "standard:150"], help="budget:inputs")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = bundled("digits")
    train, test = ds.split(test_size=0.3, seed=0)
    torch.manual_seed(0)  # the same demo model in every run
    model = SmallCNN(in_channels=1, num_classes=10, image_size=8)
    fit(model, train.x, train.y, epochs=15, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits_cnn.pt"
        torch.jit.save(torch.jit.script(model.eval()), str(path))
        for run in args.runs:
            budget, _, n = run.partition(":")
            t0, c0 = time.perf_counter(), time.process_time()
            report = evasion_report([str(path)], test, eps=args.eps, budget=budget, limit=int(n))
            took, cpu = time.perf_counter() - t0, time.process_time() - c0
            m = report.metrics
            lo, hi = m["robust_accuracy_ci"]
            stages = next(iter(m["models"].values()))["stages"]
            parts = ", ".join(
                f"{s['name']} {s['seconds']:.0f}s" + (" (skipped)" if s["skipped"] else "")
                for s in stages
            )
            print(
                f"{budget:9s} inputs={report.data['evaluated']:4d} wall_s={took:7.1f} cpu_s={cpu:7.1f} "
                f"clean={m['clean_accuracy']:.3f} robust={m['robust_accuracy']:.3f} "
                f"[{lo:.3f}, {hi:.3f}]  {parts}",
                flush=True,
            )


if __name__ == "__main__":
    main()
