"""``mlwarden audit PLAN.yaml``: run a plan of checks as jobs and write one report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlwarden.cli.common import (
    DebugOpt,
    FailOnOpt,
    HtmlOpt,
    JsonOpt,
    JunitOpt,
    QuietOpt,
    SarifOpt,
    finish,
    parse_fail_on,
    setup,
)
from mlwarden.core.findings import Report


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit(
        plan_path: Annotated[
            Path,
            typer.Argument(
                help="PLAN.yaml (write one with `mlwarden threats --plan`).", dir_okay=False
            ),
        ],
        executor: Annotated[
            str,
            typer.Option(
                "--executor",
                help="local | process[=N] | ray[=ADDRESS]: where the jobs run.",
            ),
        ] = "local",
        baseline: Annotated[
            Path | None,
            typer.Option(
                "--baseline",
                help="A previous --json report: fail only on regressions (worse metrics, new findings).",
                dir_okay=False,
            ),
        ] = None,
        cache_dir: Annotated[
            Path | None,
            typer.Option(
                "--cache-dir", help="Job result cache (default: PLAN_DIR/.mlwarden/cache)."
            ),
        ] = None,
        no_cache: Annotated[
            bool, typer.Option("--no-cache", help="Run every job, ignoring cached results.")
        ] = False,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = None,
        seed: Annotated[
            int | None, typer.Option("--seed", help="Override the plan's seed.")
        ] = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Run the checks of an audit plan on local cores or Ray; one HTML/JSON/SARIF/JUnit report.

        Exit status: 1 when a finding reaches --fail-on (or, with --baseline, on a
        regression); otherwise 2 when a check could not run (an MLW-AUD-001 finding: an
        audit with a hole in it is never reported clean); else 0.
        """
        from mlwarden.audit.baseline import apply_baseline, load_baseline
        from mlwarden.audit.plan import load_plan
        from mlwarden.audit.runner import run_plan
        from mlwarden.core.console import err, settings
        from mlwarden.core.executor import parse_spec

        setup(quiet=quiet, debug=debug, seed=seed)
        threshold = parse_fail_on(fail_on)
        plan = load_plan(plan_path)
        if seed is not None:
            plan.seed = seed
        parse_spec(executor)
        previous = load_baseline(baseline) if baseline is not None else None
        report = run_plan(
            plan,
            executor=executor,
            cache_dir=cache_dir,
            use_cache=False if no_cache else None,
            source=str(plan_path),
        )
        if previous is None:
            code = finish(
                report,
                json_path=json_path,
                html_path=html_path,
                sarif_path=sarif_path,
                junit_path=junit_path,
                fail_on=fail_on,
            )
            raise typer.Exit(code or _incomplete(report))
        failing = apply_baseline(report, previous, plan.baseline.metrics, threshold)
        report.config["baseline"] = str(baseline)
        finish(
            report,
            json_path=json_path,
            html_path=html_path,
            sarif_path=sarif_path,
            junit_path=junit_path,
            fail_on=None,
        )
        if not settings.quiet:
            if failing:
                err.print(f"[bold]baseline[/bold]: {len(failing)} regression(s) since {baseline}")
            else:
                err.print(f"[bold]baseline[/bold]: no regressions since {baseline}")
        raise typer.Exit(1 if failing else _incomplete(report))


def _incomplete(report: Report) -> int:
    """2 when any check of the audit could not run (fail closed), else 0."""
    from mlwarden.core.console import err, settings

    broken = {c.name: c.message for c in report.checks if c.status == "error"}
    for f in report.findings:
        if f.rule == "MLW-AUD-001":
            broken.setdefault(f.check or f.title, f.description)
    if not broken:
        return 0
    if not settings.quiet:
        names = ", ".join(sorted(broken))
        err.print(f"[bold]audit[/bold]: incomplete, these checks could not run: {names}")
        for name in sorted(broken):
            first = (broken[name] or "").strip().splitlines()
            err.print(f"  {name}: {first[0][:300] if first else 'no message'}", markup=False)
    return 2
