"""Wall time and robust accuracy of the evasion budgets (fast, standard) on the demo model.

The demo's digits CNN (SmallCNN, 8x8 digits, trained as ``mlwarden demo`` trains it),
saved as TorchScript and attacked through the command line's own code path
(:func:`mlwarden.evasion.evasion_report`) at Linf eps=0.1, on a seeded subset.

    nice -n 10 .venv/bin/python benchmarks/evasion_budget.py --fast 500 --standard 150

Prints one row per budget: inputs, seconds, robust accuracy (95% interval), stages.
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
    ap.add_argument("--fast", type=int, default=500, help="inputs for the fast budget")
    ap.add_argument("--standard", type=int, default=150, help="inputs for the standard budget")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = bundled("digits")
    train, test = ds.split(test_size=0.3, seed=0)
    model = SmallCNN(in_channels=1, num_classes=10, image_size=8)
    fit(model, train.x, train.y, epochs=15, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits_cnn.pt"
        torch.jit.save(torch.jit.script(model.eval()), str(path))
        for budget, n in (("fast", args.fast), ("standard", args.standard)):
            if n <= 0:
                continue
            t0 = time.perf_counter()
            report = evasion_report([str(path)], test, eps=args.eps, budget=budget, limit=n)
            took = time.perf_counter() - t0
            m = report.metrics
            lo, hi = m["robust_accuracy_ci"]
            stages = next(iter(m["models"].values()))["stages"]
            parts = ", ".join(
                f"{s['name']} {s['seconds']:.0f}s" + (" (skipped)" if s["skipped"] else "")
                for s in stages
            )
            print(
                f"{budget:9s} inputs={report.data['evaluated']:4d} seconds={took:7.1f} "
                f"clean={m['clean_accuracy']:.3f} robust={m['robust_accuracy']:.3f} "
                f"[{lo:.3f}, {hi:.3f}]  {parts}",
                flush=True,
            )


if __name__ == "__main__":
    main()
