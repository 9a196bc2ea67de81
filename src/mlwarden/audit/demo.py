"""``mlwarden demo``: train a small classifier on bundled digits and run every check on it.

Each check package contributes ``<package>.demo.run(ctx) -> Report``; a step that
fails becomes an error finding instead of stopping the demo.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from mlwarden.core.console import info, settings
from mlwarden.core.data import bundled, save_npz
from mlwarden.core.demo_context import DemoContext
from mlwarden.core.findings import CheckRecord, Finding, Report, Severity
from mlwarden.core.models import SmallCNN, accuracy, fit

#: (step name, module providing ``run(ctx) -> Report``), in the order they run.
STEPS: tuple[tuple[str, str], ...] = (
    ("scan", "mlwarden.supplychain.demo"),
    ("registry", "mlwarden.integrity.demo"),
    ("data", "mlwarden.poisoning.demo"),
    ("evasion", "mlwarden.evasion.demo"),
    ("audio", "mlwarden.evasion.audio.demo"),
    ("text", "mlwarden.evasion.text.demo"),
    ("privacy", "mlwarden.privacy.demo"),
    ("threats", "mlwarden.threats.demo"),
    # Last: write DIR/system.yaml and DIR/plan.yaml and run `mlwarden audit` on them.
    ("audit", "mlwarden.audit.demo_plan"),
)


def prepare(out_dir: Path, seed: int = 0, quick: bool = True) -> DemoContext:
    """Train the demo models on digits and write their files under ``out_dir/artifacts``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    art = out_dir / "artifacts"
    art.mkdir(exist_ok=True)
    torch.manual_seed(seed)
    ds = bundled("digits")
    train, test = ds.split(test_size=0.3, seed=seed)
    model = SmallCNN(in_channels=1, num_classes=10, image_size=8)
    fit(model, train.x, train.y, epochs=15, seed=seed)
    ts_path = art / "digits_cnn.pt"
    torch.jit.script(model).save(str(ts_path))
    sd_path = art / "digits_cnn_state.pth"
    torch.save(model.state_dict(), sd_path)
    clf = LogisticRegression(max_iter=2000)
    clf.fit(train.x.reshape(len(train), -1), train.y)
    sk_path = art / "digits_logreg.joblib"
    joblib.dump(clf, sk_path)
    data_path = art / "digits.npz"
    save_npz(ds, data_path)
    return DemoContext(
        out_dir=out_dir,
        seed=seed,
        dataset=ds,
        train=train,
        test=test,
        model=model,
        torchscript_path=ts_path,
        state_dict_path=sd_path,
        sklearn_model=clf,
        sklearn_path=sk_path,
        data_path=data_path,
        quick=quick,
    )


def run_demo(out_dir: Path, seed: int = 0, quick: bool = True) -> Report:
    report = Report.new(command="demo", seed=seed)
    start = time.perf_counter()
    ctx = prepare(out_dir, seed=seed, quick=quick)
    report.timings["prepare"] = round(time.perf_counter() - start, 3)
    report.target = {
        "name": "digits_cnn",
        "adapter": "TorchScriptTarget",
        "path": str(ctx.torchscript_path),
        "clean_accuracy": accuracy(ctx.model, ctx.test.x, ctx.test.y),
    }
    report.data = ctx.dataset.describe()
    report.metrics["demo.clean_accuracy"] = report.target["clean_accuracy"]
    for name, module_name in STEPS:
        module = importlib.import_module(module_name)
        info(f"demo: running {name}")
        t0 = time.perf_counter()
        try:
            step_report = module.run(ctx)
        except Exception as exc:  # a failing step is reported, not fatal
            if settings.debug:
                raise
            seconds = time.perf_counter() - t0
            report.checks.append(
                CheckRecord(name=name, status="error", seconds=seconds, message=str(exc))
            )
            report.add(
                Finding(
                    rule="MLW-AUD-001",
                    title=f"demo step {name!r} failed: {type(exc).__name__}",
                    severity=Severity.HIGH,
                    description=str(exc),
                    recommendation="Rerun with --debug and report the traceback.",
                    check=name,
                )
            )
            continue
        seconds = time.perf_counter() - t0
        report.merge(step_report, prefix=name)
        if not any(c.name == name for c in step_report.checks):
            report.checks.append(CheckRecord(name=name, seconds=seconds))
        report.timings[name] = round(seconds, 3)
    np.random.seed(seed)
    return report
