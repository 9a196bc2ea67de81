"""Options and output shared by every command.

Every command that produces findings takes the same report options and ends with
:func:`finish`, which writes the requested formats and returns the exit status:
1 when a finding at or above ``--fail-on`` exists, else 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlwarden.core.console import err, settings
from mlwarden.core.errors import UserError
from mlwarden.core.findings import Report, Severity


def _check_output(value: Path | None) -> Path | None:
    """Refuse, before any work, a report path that cannot be created (a parent is a file)."""
    if value is not None:
        for parent in value.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise typer.BadParameter(f"{parent} is a file, so {value} cannot be created")
                break
    return value


JsonOpt = Annotated[
    Path | None,
    typer.Option(
        "--json", help="Write the JSON report here.", dir_okay=False, callback=_check_output
    ),
]
HtmlOpt = Annotated[
    Path | None,
    typer.Option(
        "--html", help="Write the HTML report here.", dir_okay=False, callback=_check_output
    ),
]
SarifOpt = Annotated[
    Path | None,
    typer.Option(
        "--sarif", help="Write a SARIF 2.1.0 log here.", dir_okay=False, callback=_check_output
    ),
]
JunitOpt = Annotated[
    Path | None,
    typer.Option("--junit", help="Write JUnit XML here.", dir_okay=False, callback=_check_output),
]


def _check_fail_on(value: str | None) -> str | None:
    """Reject a bad ``--fail-on`` while parsing, before any long work starts."""
    if value is not None:
        try:
            Severity.parse(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


FailOnOpt = Annotated[
    str | None,
    typer.Option(
        "--fail-on",
        help="Exit 1 when a finding at or above this severity exists (critical|high|medium|low|info).",
        callback=_check_fail_on,
    ),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Random seed; the same seed gives the same report.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or status output.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]


def setup(*, quiet: bool = False, debug: bool = False, seed: int | None = None) -> None:
    """Apply the shared flags; seeds numpy, random and torch when a seed is given."""
    settings.quiet = quiet
    settings.debug = debug
    if seed is not None:
        seed_everything(seed)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def parse_fail_on(value: str | None) -> Severity | None:
    if value is None:
        return None
    try:
        return Severity.parse(value)
    except ValueError as exc:
        raise UserError(f"--fail-on: {exc}") from None


def finish(
    report: Report,
    *,
    json_path: Path | None = None,
    html_path: Path | None = None,
    sarif_path: Path | None = None,
    junit_path: Path | None = None,
    fail_on: str | None = None,
    summary: bool = True,
) -> int:
    """Write the requested report formats, print a summary; return the exit status."""
    from mlwarden.report import write_reports

    threshold = parse_fail_on(fail_on)
    try:
        written = write_reports(
            report,
            json_path=json_path,
            html_path=html_path,
            sarif_path=sarif_path,
            junit_path=junit_path,
            fail_on=threshold,
        )
    except OSError as exc:
        where = exc.filename or "a report file"
        raise UserError(f"cannot write {where} ({exc.strerror or exc})") from None
    if summary and not settings.quiet:
        print_summary(report)
        for path in written:
            err.print(f"wrote {path}")
    if threshold is not None and report.at_or_above(threshold):
        return 1
    return 0


def print_summary(report: Report) -> None:
    from rich.table import Table

    counts = report.severity_counts()
    line = ", ".join(f"{n} {sev}" for sev, n in counts.items() if n) or "no findings"
    err.print(f"[bold]{report.command}[/bold]: {line}")
    if report.findings:
        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("severity")
        table.add_column("rule")
        table.add_column("finding")
        ranked = sorted(report.findings, key=lambda f: -f.severity.rank)
        for f in ranked[:25]:
            table.add_row(f.severity.value, f.rule, f.title)
        err.print(table)
        seen: dict[str, dict] = {}
        for f in ranked:
            for c in f.case_studies:
                seen.setdefault(c["id"], c)
        if seen:
            err.print("real-world attacks that used these techniques (MITRE ATLAS case studies):")
            for c in list(seen.values())[:5]:
                err.print(f"  {c['id']} {c['name']}  {c.get('url', '')}", markup=False)
