"""The demo's audit: ``DIR/system.yaml`` and ``DIR/plan.yaml``, then ``mlwarden audit`` on them.

``mlwarden demo --out DIR`` ends here. It leaves the demo system's description and an
audit plan that names the demo artefacts by paths relative to DIR, so a user can edit
either file and rerun ``mlwarden threats DIR/system.yaml`` or ``mlwarden audit
DIR/plan.yaml``. The plan uses quick settings (small query budgets, few shadow models,
the ``quick`` attack budget) so the demo stays short; the comments say what to raise for
a real audit.
"""

from __future__ import annotations

from pathlib import Path

from mlwarden.audit.plan import load_plan
from mlwarden.audit.runner import run_plan
from mlwarden.core.console import info
from mlwarden.core.data import save_npz
from mlwarden.core.demo_context import DemoContext
from mlwarden.core.findings import Report
from mlwarden.threats.demo import write_demo_system

_PLAN_HEAD = """\
# The demo's audit plan. Edit it and rerun: mlwarden audit {dir}/plan.yaml --html audit.html
# Paths are relative to this file. Quick settings keep the demo short; for a real audit
# raise evasion limit/budget (budget: standard), privacy shadows (16+), extract budgets.
version: 1
name: digits-demo
seed: {seed}
artifacts:
  models:
    cnn: artifacts/digits_cnn.pt
    logreg: artifacts/digits_logreg.joblib
  datasets:
    train: artifacts/train.npz
    holdout: artifacts/holdout.npz
  gateway: gateway.yaml
checks:
  - check: threats            # the threat model of system.yaml, in the same report
    system: system.yaml
  - check: scan               # code hidden in the model files (MLW-THR-001)
    paths: [cnn, logreg]
  - check: gateway-config     # the serving gateway's settings (MLW-THR-014)
  - check: evasion            # robust accuracy under attack (MLW-THR-008)
    models: [cnn]
    data: holdout
    norm: linf
    eps: 0.1
    options: {{budget: quick, limit: 32}}
  - check: extract            # how well a copy trained on answers agrees (MLW-THR-012)
    model: logreg
    pool: holdout
    budgets: [50, 200]
"""

_REGISTRY_CHECK = """\
  - check: registry-verify    # signature and digest of the registered model (MLW-THR-003)
    ref: digits-cnn@production
    registry: registry
    trust: [registry-keys/demo.key.pub]
"""

#: A gateway config with the gaps the demo system admits to (anonymous callers, no
#: per-caller limits), so the gateway-config check has something to say.
_GATEWAY = """\
# Demo gateway config (mlwarden serve): anonymous callers get rounded scores, no limits.
input:
  shape: [1, 8, 8]
  range: [0.0, 1.0]
anonymous:
  role: scores
"""


def write_demo_files(ctx: DemoContext) -> tuple[Path, Path]:
    """Write DIR/system.yaml, DIR/plan.yaml, DIR/gateway.yaml and the train/holdout sets."""
    out = ctx.out_dir
    art = out / "artifacts"
    art.mkdir(parents=True, exist_ok=True)
    save_npz(ctx.train, art / "train.npz")
    save_npz(ctx.test, art / "holdout.npz")
    (out / "gateway.yaml").write_text(_GATEWAY, encoding="utf-8")
    system = write_demo_system(out)
    text = _PLAN_HEAD.format(dir=out, seed=ctx.seed)
    if (out / "registry").is_dir() and (out / "registry-keys" / "demo.key.pub").is_file():
        text += _REGISTRY_CHECK
    plan = out / "plan.yaml"
    plan.write_text(text, encoding="utf-8")
    return system, plan


def run_demo_audit(ctx: DemoContext) -> tuple[Report, Path]:
    """Write the demo's plan, run it (in-process), write DIR/audit/report.{json,html}."""
    from mlwarden.report import write_reports

    _, plan_path = write_demo_files(ctx)
    report = run_plan(load_plan(plan_path), executor="local", source=str(plan_path))
    html = ctx.out_dir / "audit" / "report.html"
    write_reports(report, json_path=html.with_suffix(".json"), html_path=html)
    info(f"audit: report {html.resolve()} (rerun: mlwarden audit {plan_path})")
    return report, html


def run(ctx: DemoContext) -> Report:
    """The demo's last step: run the audit; the demo report records only its summary.

    The audit's findings stay in its own report (DIR/audit/report.html) rather than
    repeating, in the demo report, what the earlier demo steps already found.
    """
    audit, html = run_demo_audit(ctx)
    summary = Report.new(command="audit", seed=ctx.seed)
    for key, value in audit.metrics.items():
        if key.startswith("audit."):
            summary.metrics[key.removeprefix("audit.")] = value
    summary.metrics["findings"] = len(audit.findings)
    summary.artifacts["report"] = str(html)
    summary.artifacts["plan"] = str(ctx.out_dir / "plan.yaml")
    summary.artifacts["system"] = str(ctx.out_dir / "system.yaml")
    return summary
