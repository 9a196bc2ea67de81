"""Demo step: scan the demo's own model and data files; they must come out safe."""

from __future__ import annotations

from mlwarden.core.demo_context import DemoContext
from mlwarden.core.findings import Report
from mlwarden.supplychain.report import scan_report


def run(ctx: DemoContext) -> Report:
    """Scan the TorchScript model, the state dict, the joblib estimator and the data."""
    paths = [ctx.torchscript_path, ctx.state_dict_path, ctx.sklearn_path, ctx.data_path]
    report = scan_report(paths, seed=ctx.seed)
    report.metrics["all_safe"] = report.metrics.get("files_safe") == len(paths)
    return report
