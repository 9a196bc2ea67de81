"""``mlwarden threats``: which attacks apply to a system, and which checks address them."""

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
    SeedOpt,
    finish,
    setup,
)
from mlwarden.core.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("threats")
    def threats(
        system: Annotated[
            Path | None,
            typer.Argument(
                help="SYSTEM.yaml describing the ML system (see --example).", dir_okay=False
            ),
        ] = None,
        init: Annotated[
            bool,
            typer.Option(
                "--init",
                help="Ask the questions and write SYSTEM.yaml (an interrupted session resumes "
                "from SYSTEM.yaml.partial).",
            ),
        ] = False,
        answers_file: Annotated[
            Path | None,
            typer.Option(
                "--answers",
                help="With --init: take the answers from this YAML file (SYSTEM.yaml format) "
                "instead of asking.",
                dir_okay=False,
            ),
        ] = None,
        set_values: Annotated[
            list[str] | None,
            typer.Option(
                "--set",
                help="With --init: answer FIELD=VALUE without asking (e.g. "
                "deployment.outputs=labels; lists comma-separated). Repeatable.",
            ),
        ] = None,
        example: Annotated[
            bool, typer.Option("--example", help="Print a filled-in example SYSTEM.yaml.")
        ] = False,
        plan: Annotated[
            Path | None,
            typer.Option(
                "--plan",
                help="Write an audit plan of the checks that address the threats.",
                dir_okay=False,
            ),
        ] = None,
        rules: Annotated[
            Path | None,
            typer.Option(
                "--rules", help="Use this rule file instead of the built-in rules.", dir_okay=False
            ),
        ] = None,
        json_path: JsonOpt = None,
        html_path: HtmlOpt = None,
        sarif_path: SarifOpt = None,
        junit_path: JunitOpt = None,
        fail_on: FailOnOpt = None,
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """List the threats that apply to an ML system, with ATLAS ids, reasons and checks."""
        from importlib import resources

        from rich.console import Console

        from mlwarden.core.console import err, settings
        from mlwarden.threats import assess, load_rules, load_system
        from mlwarden.threats.engine import threats_report
        from mlwarden.threats.plan import write_plan

        setup(quiet=quiet, debug=debug)
        if example:
            text = resources.files("mlwarden.threats").joinpath("example.yaml").read_text("utf-8")
            typer.echo(text, nl=False)
            raise typer.Exit(0)
        if (answers_file is not None or set_values) and not init:
            raise UserError("--answers and --set go with --init")
        if init:
            system = _init(system or Path("system.yaml"), answers_file, list(set_values or []))
        if system is None:
            raise UserError("give a SYSTEM.yaml (or --init to write one, --example to see one)")
        described = load_system(system)
        ruleset = load_rules(rules)
        found = assess(described, ruleset)
        report = threats_report(described, ruleset, seed=seed)
        report.target["source"] = str(system)
        if plan is not None:
            write_plan(described, found, system, plan)
            report.artifacts["plan"] = str(plan)
        if not settings.quiet:
            _print_threats(Console(soft_wrap=True, highlight=False), report)
            if plan is not None:
                err.print(f"wrote audit plan {plan}; run: mlwarden audit {plan}")
        raise typer.Exit(
            finish(
                report,
                json_path=json_path,
                html_path=html_path,
                sarif_path=sarif_path,
                junit_path=junit_path,
                fail_on=fail_on,
            )
        )


def _init(path: Path, answers_file: Path | None, sets: list[str]) -> Path:
    """``--init``: ask (resuming an interrupted session) or, with --answers/--set, don't."""
    from rich.console import Console

    from mlwarden.core.console import err
    from mlwarden.threats.interactive import (
        answers_from,
        ask_system,
        missing_answers,
        nest,
        partial_path,
        read_partial,
        system_yaml,
        write_partial,
    )
    from mlwarden.threats.schema import parse_system

    if answers_file is not None or sets:
        given = answers_from(answers_file, sets)
        missing = missing_answers(given)
        if missing:
            raise UserError(
                f"--init without prompts needs an answer for: {', '.join(missing)} "
                "(in the --answers file or as --set FIELD=VALUE)"
            )
        described = parse_system(nest(given), str(answers_file or "--set"))
    else:
        if path.exists() and not typer.confirm(f"{path} exists; overwrite it?", default=False):
            raise typer.Exit(1)
        answers = read_partial(path)
        if answers:
            err.print(f"resuming from {partial_path(path)}: {len(answers)} answers kept")
        try:
            described = ask_system(Console(), answers=answers)
        except (KeyboardInterrupt, EOFError):
            kept = write_partial(path, answers)
            err.print(
                f"\ninterrupted: kept {len(answers)} answers in {kept}; run --init again to resume"
            )
            raise typer.Exit(130) from None
    path.write_text(system_yaml(described), encoding="utf-8")
    partial_path(path).unlink(missing_ok=True)
    err.print(f"wrote {path}")
    return path


def _print_threats(console: object, report: object) -> None:
    from rich.console import Console
    from rich.markup import escape

    from mlwarden.core import atlas
    from mlwarden.core.findings import Report

    assert isinstance(console, Console) and isinstance(report, Report)
    if not report.findings:
        console.print("No threat rule applies to this system description.")
        return
    for f in report.findings:
        ev = f.evidence
        console.print(f"[bold]{f.rule}[/bold] \\[{f.severity.value}] {escape(f.title)}")
        techniques = ", ".join(f"{t} {atlas.get(t).full_name}" for t in ev["techniques"])
        tactics = ", ".join(f"{t} {atlas.get(t).name}" for t in ev["tactics"])
        console.print(f"  ATLAS techniques: {techniques}")
        console.print(f"  ATLAS tactics:    {tactics}")
        console.print(f"  likelihood {ev['likelihood']}: {'; '.join(ev['likelihood_reasons'])}")
        console.print(f"  impact {ev['impact']}: {'; '.join(ev['impact_reasons'])}")
        checks = ", ".join(ev["checks"]) or "none automated (review item)"
        console.print(f"  mlwarden checks:  {checks}")
        mitigations = ", ".join(f"{m} {atlas.get(m).name}" for m in f.mitigations)
        console.print(f"  ATLAS mitigations: {mitigations}")
        console.print(f"  do: {f.recommendation}")
        console.print()
