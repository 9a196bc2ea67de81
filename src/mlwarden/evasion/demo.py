"""The evasion step of ``mlwarden demo``: a quick robustness check of the demo CNN.

A QUICK DEMO, not a robustness claim: 100 test digits, Linf eps=0.1, and the reduced
:meth:`~mlwarden.evasion.suite.Budget.quick` budget (APGD 20 iterations, 3 target
classes, Square 200 queries). Run ``mlwarden evasion`` for the standard evaluation.
"""

from __future__ import annotations

from mlwarden.core.demo_context import DemoContext
from mlwarden.core.findings import Report
from mlwarden.evasion.report import add_results, findings_for
from mlwarden.evasion.suite import Budget, evaluate

DEMO_EPS = 0.1
DEMO_POINTS = 100


def run(ctx: DemoContext) -> Report:
    """Evaluate ``ctx.model`` on up to 100 test digits at Linf eps=0.1 (quick budget)."""
    report = Report.new(command="evasion (quick demo)", seed=ctx.seed)
    test = ctx.test.subset(slice(0, DEMO_POINTS))
    report.config = {
        "norm": "linf",
        "eps": DEMO_EPS,
        "budget": "quick",
        "note": "quick demo with reduced budgets; run `mlwarden evasion` for a standard evaluation",
    }
    with report.timed("evasion.quick_demo"):
        res = evaluate(
            ctx.model,
            test.x,
            test.y,
            norm="linf",
            eps=DEMO_EPS,
            bounds=test.bounds,
            budget=Budget.quick(),
            seed=ctx.seed,
        )
    report.add(*findings_for(res, "digits_cnn (quick demo)"))
    add_results(report, {"digits_cnn": res}, test)
    return report
