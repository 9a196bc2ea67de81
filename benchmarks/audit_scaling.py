"""Audit scaling: one plan of N independent CPU-bound jobs on the local, process and Ray executors.

Workloads (``--workload``):

* ``shadows`` (default): N shadow-model trainings, the inner loop of a LiRA membership
  audit (Carlini et al., "Membership Inference Attacks From First Principles",
  arXiv:2112.03570): a SmallCNN trained on a random half of the bundled digits per job,
  each job a ``custom`` check of the plan.
* ``evasion``: N ``evasion`` checks (mlwarden.evasion.evasion_report, quick budget) of
  one TorchScript CNN, seeds differing, so N real plan checks.

Every job goes through the same path as ``mlwarden audit``: plan -> jobs -> executor ->
merged report (the cache is off). Wall time is the median over ``--repeats`` runs,
interleaved across executors; it includes starting the process pool (spawned workers
import torch). Ray is started once before timing (its start time is printed
separately), as a cluster would already be up.

Run (2 cores)::

    timeout 900 .venv/bin/python benchmarks/audit_scaling.py --jobs 8 --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def train_shadow(seed: int = 0, epochs: int = 10) -> object:
    """One shadow model: SmallCNN on a seeded random half of digits; returns a Report."""
    import numpy as np
    import torch

    from mlwarden.core.data import bundled
    from mlwarden.core.findings import Report
    from mlwarden.core.models import SmallCNN, accuracy, fit

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    ds = bundled("digits")
    rng = np.random.default_rng(seed)
    member = rng.random(len(ds)) < 0.5
    model = SmallCNN(in_channels=1, num_classes=10, image_size=8)
    fit(model, ds.x[member], ds.y[member], epochs=epochs, seed=seed)
    report = Report.new("shadow", seed)
    report.metrics["train_accuracy"] = accuracy(model, ds.x[member], ds.y[member])
    report.metrics["holdout_accuracy"] = accuracy(model, ds.x[~member], ds.y[~member])
    return report


def shadow_plan(folder: Path, jobs: int, epochs: int) -> Path:
    checks = [
        {
            "check": "custom",
            "name": f"shadow-{i}",
            "function": "audit_scaling:train_shadow",
            "params": {"seed": i, "epochs": epochs},
        }
        for i in range(jobs)
    ]
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "checks": checks, "cache": False}))
    return path


def evasion_plan(folder: Path, jobs: int) -> Path:
    import torch

    from mlwarden.core.data import bundled, save_npz
    from mlwarden.core.models import SmallCNN, fit

    torch.manual_seed(0)
    ds = bundled("digits")
    train, test = ds.split(test_size=0.3, seed=0)
    model = SmallCNN(in_channels=1, num_classes=10, image_size=8)
    fit(model, train.x, train.y, epochs=10, seed=0)
    torch.jit.script(model).save(str(folder / "cnn.pt"))
    save_npz(test, folder / "holdout.npz")
    checks = [
        {
            "check": "evasion",
            "name": f"evasion-{i}",
            "models": ["cnn"],
            "data": "holdout",
            "eps": 0.1,
            "options": {"budget": "quick", "limit": 64},
        }
        for i in range(jobs)
    ]
    plan = {
        "version": 1,
        "artifacts": {"models": {"cnn": "cnn.pt"}, "datasets": {"holdout": "holdout.npz"}},
        "checks": checks,
        "cache": False,
    }
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def run_once(plan_path: Path, executor: str) -> tuple[float, object]:
    """One timed audit of the plan on ``executor``; exits if any job failed."""
    from mlwarden.audit.plan import load_plan
    from mlwarden.audit.runner import run_plan

    plan = load_plan(plan_path)
    t0 = time.perf_counter()
    report = run_plan(plan, executor=executor, use_cache=False)
    seconds = time.perf_counter() - t0
    failed = report.metrics["audit.jobs_failed"]
    if failed:
        errors = [f.description for f in report.findings if f.rule == "MLW-AUD-001"]
        raise SystemExit(f"{executor}: {failed} jobs failed: {errors[:2]}")
    return seconds, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=["shadows", "evasion"], default="shadows")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    # Workers (spawned processes, Ray workers) import the job function by module name.
    sys.path.insert(0, str(HERE))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
    )
    from mlwarden.report.json_report import report_dict

    print(f"cpus={os.cpu_count()} loadavg(before)={os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.workload == "shadows":
            plan = shadow_plan(folder, args.jobs, args.epochs)
        else:
            plan = evasion_plan(folder, args.jobs)
        executors = {"local": "local", "process": f"process={args.workers}"}
        if not args.no_ray:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
            print(f"ray start: {time.perf_counter() - t0:.1f} s (not in the timings below)")
            executors["ray"] = "ray"
        times: dict[str, list[float]] = {name: [] for name in executors}
        metrics: dict[str, dict] = {}
        try:
            # Interleaved (local, process, ray, local, ...) so that load from other
            # programs drifting over time does not favour one executor.
            for _ in range(args.repeats):
                for name, spec in executors.items():
                    seconds, rep = run_once(plan, spec)
                    times[name].append(seconds)
                    metrics[name] = report_dict(rep)["metrics"]  # type: ignore[arg-type]
        finally:
            if not args.no_ray:
                ray.shutdown()
        results = {name: (statistics.median(t), t) for name, t in times.items()}
    base = results["local"][0]
    print(
        f"workload={args.workload} jobs={args.jobs} workers={args.workers} "
        f"repeats={args.repeats} epochs={args.epochs}"
    )
    print(f"{'executor':<10}{'median s':>10}{'speed-up':>10}  runs (s)")
    for name, (med, runs_s) in results.items():
        runs = ", ".join(f"{t:.1f}" for t in runs_s)
        print(f"{name:<10}{med:>10.1f}{base / med:>9.2f}x  {runs}")
    same = all(
        {k: v for k, v in m.items() if not k.startswith("audit.")}
        == {k: v for k, v in metrics["local"].items() if not k.startswith("audit.")}
        for m in metrics.values()
    )
    print(f"identical metrics across executors: {same}")
    print(f"loadavg(after)={os.getloadavg()}")


if __name__ == "__main__":
    main()
