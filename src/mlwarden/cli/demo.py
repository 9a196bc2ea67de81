"""``mlwarden demo``: the main job on bundled data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlwarden.cli.common import DebugOpt, FailOnOpt, QuietOpt, SeedOpt, finish, setup
from mlwarden.core.console import err, settings


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Annotated[
            Path, typer.Option("--out", help="Folder for the report and demo artefacts.")
        ] = Path("demo-out"),
        seed: SeedOpt = 0,
        fail_on: FailOnOpt = None,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Train a small classifier on bundled digits, run every check on it, write a report."""
        from mlwarden.audit.demo import run_demo

        setup(quiet=quiet, debug=debug, seed=seed)
        report = run_demo(out, seed=seed)
        code = finish(
            report, json_path=out / "report.json", html_path=out / "report.html", fail_on=fail_on
        )
        if not settings.quiet:
            err.print(f"report: {(out / 'report.html').resolve()}")
        raise typer.Exit(code)
